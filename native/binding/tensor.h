#pragma once
// Tensor handles: a tensor reaches JS as a number, its id in a per-env table of at::Tensor slots.
// Ops read ids and return ids, so no JS object is made, wrapped or tagged per call (Node-API's wrap
// machinery cost more than a 1-element add). An id is slot + generation * 2^24: a slot's generation
// grows each time it is reused, so the stale id of a disposed tensor never finds a newer tensor.
// lib/tensor.ts owns each id in a Tensor object and frees it on dispose() or when the GC collects
// that object. The native size is reported to V8 as external memory, so the GC sees it.
#include <napi.h>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "binding/boundary.h"

namespace jfa::binding {

// The slots of one env's tensors. Used on the JS thread only: workers copy their at::Tensors.
class TensorTable {
 public:
  static constexpr int kSlotBits = 24;
  static constexpr uint64_t kSlots = uint64_t{1} << kSlotBits;
  // ids stay integers a double holds exactly (< 2^53); a slot that reaches this is retired.
  static constexpr uint64_t kMaxGeneration = (uint64_t{1} << (53 - kSlotBits)) - 1;

  enum class State { Live, Disposed, Foreign };

  // A new id owning `t`; a RangeError when kSlots tensors are live.
  double insert(Napi::Env env, at::Tensor t);
  // Live: `*out` is the tensor (its address is stable until the id is released). Disposed: an id
  // this table issued whose tensor was freed. Foreign: anything else (not a number, never issued).
  State find(double id, at::Tensor** out);
  // Frees a live id's tensor; false (and nothing done) for any other id.
  bool release(Napi::Env env, double id);

  int64_t live() const { return live_; }
  int64_t live_bytes() const { return live_bytes_; }

 private:
  static constexpr uint32_t kChunkBits = 12;  // slots live in fixed chunks: no address moves on growth
  static constexpr uint32_t kNone = UINT32_MAX;
  struct Slot {
    at::Tensor tensor;
    int64_t bytes = 0;
    uint64_t generation = 0;  // of the current or last occupant; ids start at generation 1
    uint32_t next_free = kNone;
    bool live = false;
  };
  Slot& at(uint32_t slot) { return chunks_[slot >> kChunkBits][slot & ((1u << kChunkBits) - 1)]; }
  void account(Napi::Env env, int64_t bytes);

  std::vector<std::unique_ptr<Slot[]>> chunks_;
  uint32_t used_ = 0;  // slots ever handed out
  uint32_t free_ = kNone;
  int64_t live_ = 0;
  int64_t live_bytes_ = 0;
};

struct AddonData {
  Napi::FunctionReference model_class;
  Napi::FunctionReference decoder_class;
  Napi::FunctionReference continuous_class;
  Signatures signatures;
  TensorTable tensors;
};

AddonData& addon_data(Napi::Env env);

namespace tensor_handle {

// Exports the per-tensor functions: shape, dtype, device, nbytes, isDisposed, toTypedArray, dispose.
void register_functions(Napi::Env env, Napi::Object exports, Signatures& signatures);
// A new id owning `t`.
Napi::Value wrap(Napi::Env env, at::Tensor t);
// Whether `v` is an id this env issued, live or disposed.
bool is_tensor(Napi::Env env, const Napi::Value& v);
// The tensor of a live id, or nullptr when `v` is a disposed id or no id at all.
const at::Tensor* unwrap(Napi::Env env, const Napi::Value& v);

}  // namespace tensor_handle
}  // namespace jfa::binding
