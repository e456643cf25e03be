#pragma once
#include <napi.h>

#include "binding/boundary.h"

namespace jfa::binding {
void register_io(Napi::Env env, Napi::Object exports, Signatures& signatures);
}
