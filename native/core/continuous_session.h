#pragma once
// Continuous batching: many prompts generated greedily through a fixed number of slots. A slot whose
// sequence ended (end-of-sequence token or max_new_tokens) takes the next waiting prompt: the
// waiting prompts of the free slots are prefilled together, their keys and values copied into those
// slots' rows of the cache, and they decode with the other slots from the next step on. So a batch
// stays full until the queue is empty, instead of shrinking as its rows end. A prefix that all the
// prompts of a refill share (an instruction) is prefilled once, its keys and values given to each.
//
// Each slot's keys and values are one run of columns ending at the cache's shared write column
// (columns before its `start`, and padding inside it, are masked), keys are rotated by each slot's
// own positions before they are cached, and each slot carries its own latent tasks: a prompt is
// computed as it is alone (batch 1), up to the summation order of the batched products. When the write column reaches the
// cache's capacity, or runs that ended leave many dead columns before the others, every slot's
// run is moved to the front (the runs end together, so this is one copy per layer).
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <vector>

#include "core/llama.h"

namespace jfa {

// One prompt's generation, once it ended.
struct FinishedSequence {
  int64_t prompt;               // its index in the session's prompts
  std::vector<int64_t> tokens;  // generated tokens, ending with the end-of-sequence token when one ended it
};

class ContinuousSession {
 public:
  // `ids` (total) int64: the prompts' tokens one after another, `lengths` each prompt's count (>= 1).
  // `latent`: (prompts, k) increments, one row per prompt, or null. Greedy only (temperature 0; the
  // repetition penalty applies); `slots` prompts decode at once. `model` must outlive the session, unchanged.
  ContinuousSession(const LlamaModel& model, const at::Tensor& ids, const std::vector<int64_t>& lengths, int64_t slots,
                    const GenerateOptions& options, bool adapters, const LatentCall* latent, const char* op = "continuous");

  // Up to n decode steps (each may first refill free slots); returns the sequences that ended in them.
  // Ends early when cancel() was called.
  std::vector<FinishedSequence> step(int64_t n);
  // Makes a running step() return after its current decode step; the session is then done. Any thread.
  void cancel() { cancelled_ = true; }

  // Every prompt ended, or it was cancelled. The cache is freed then.
  bool done() const { return done_; }
  // Prompts not yet ended.
  int64_t remaining() const { return remaining_; }

 private:
  // How many tokens the prompts first..first+g-1 all begin with, leaving each at least one of its own.
  int64_t shared_prefix(int64_t first, int64_t g) const;
  // Prefills the next waiting prompts into the free slots and samples their first tokens.
  void refill(std::vector<FinishedSequence>& out);
  // One token for every busy slot.
  void decode_step(std::vector<FinishedSequence>& out);
  // Appends the sampled tokens (cpu, one per slot of `slots`) and frees the slots whose sequence ended.
  void take(const std::vector<int64_t>& slots, const at::Tensor& tokens, std::vector<FinishedSequence>& out);
  // The longest run of columns of a busy slot.
  int64_t longest_run() const;
  // Moves every slot's run of columns so that they end at column `end` (the new write column), and
  // keeps only the slots `keep` (all when empty).
  void relayout(const std::vector<int64_t>& keep, int64_t end);
  int64_t free_slots() const;
  void finish();

  const LlamaModel& model_;
  GenerateOptions o_;
  bool adapters_;
  at::Tensor ids_, ids_cpu_;              // (total) int64 on the model's device, and on the CPU
  std::vector<int64_t> lengths_, offsets_;  // per prompt
  std::optional<LatentCall> latent_;      // per prompt (prompts, k)
  int64_t next_prompt_ = 0, remaining_ = 0, capacity_ = 0;
  KvCache cache_;                          // (slots, kv_heads, capacity_, head_dim); cache_.length is the write column
  // Per slot:
  std::vector<int64_t> prompt_;            // its prompt, or -1 when free
  std::vector<int64_t> start_;             // the first column of its run
  at::Tensor mask_;                        // (slots, capacity_) int64: its visible columns (its run, less padding)
  std::vector<int64_t> position_;          // the position of its next token to feed
  std::vector<std::vector<int64_t>> out_;  // its tokens so far
  at::Tensor next_;                        // (slots) int64: the tokens to feed
  at::Tensor seen_;                        // (slots, vocab) bool with a repetition penalty, else undefined
  std::optional<LatentCall> mix_;          // (slots, k): the latent tasks of each slot's prompt
  std::optional<at::Generator> gen_;       // none: greedy
  bool done_ = false;
  std::atomic<bool> cancelled_{false};
};

}  // namespace jfa
