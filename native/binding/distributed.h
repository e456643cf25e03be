#pragma once
// The ProcessGroup class exported to JS (native/core/distributed.h behind Promises), and what the
// training step needs of it.
#include <napi.h>

#include <memory>
#include <string>

#include "binding/boundary.h"

namespace jfa {
class ProcessGroup;
}

namespace jfa::binding {

// The connected group behind JS ProcessGroup object `v`, or a TypeError naming `where`.
std::shared_ptr<ProcessGroup> group_arg(Napi::Env env, const Napi::Value& v, const std::string& where);

void register_distributed(Napi::Env env, Napi::Object exports, Signatures& signatures);

}  // namespace jfa::binding
