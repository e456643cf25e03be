#pragma once
#include <napi.h>

#include "binding/boundary.h"

namespace jfa::binding {
// Exports the Index class and the kmeans/kmeansAsync functions.
void register_faiss(Napi::Env env, Napi::Object exports, Signatures& signatures);
}
