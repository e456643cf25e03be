#pragma once
#include <napi.h>

namespace jfa::binding {
void register_model(Napi::Env env, Napi::Object exports);
}
