#pragma once
#include <napi.h>

namespace jfa::binding {
void register_kernels(Napi::Env env, Napi::Object exports);
}
