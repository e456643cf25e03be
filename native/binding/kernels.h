#pragma once
#include <napi.h>

#include "binding/boundary.h"
#include "core/divergence.h"

namespace jfa::binding {
void register_kernels(Napi::Env env, Napi::Object exports, Signatures& signatures);
// options.kind ('symmetric' | 'forward' | 'reverse') and options.reduction ('mean' | 'sum').
// A null fallback: the field is required.
KlKind kl_kind_option(const Options& o, const char* name = "kind", const char* fallback = "symmetric");
Reduction reduction_option(const Options& o, const char* fallback = "mean");
}  // namespace jfa::binding
