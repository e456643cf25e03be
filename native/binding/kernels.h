#pragma once
#include <napi.h>

#include "binding/boundary.h"
#include "core/divergence.h"

namespace jfa::binding {
void register_kernels(Napi::Env env, Napi::Object exports, Signatures& signatures);
// options.kind ('symmetric' | 'forward' | 'reverse') and options.reduction ('mean' | 'sum').
KlKind kl_kind_option(const Options& o, const char* name = "kind");
Reduction reduction_option(const Options& o);
}  // namespace jfa::binding
