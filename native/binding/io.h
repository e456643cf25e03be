#pragma once
#include <napi.h>

namespace jfa::binding {
void register_io(Napi::Env env, Napi::Object exports);
}
