#pragma once
#include <napi.h>

#include "binding/boundary.h"

namespace jfa::binding {
// Exports the Optimizer class: trainable parameters with their AdamW state, and the training step.
void register_train(Napi::Env env, Napi::Object exports, Signatures& signatures);
}
