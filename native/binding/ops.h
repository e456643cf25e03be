#pragma once
#include <napi.h>

namespace jfa::binding {
void register_ops(Napi::Env env, Napi::Object exports);
}
