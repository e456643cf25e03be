#pragma once
// A generation in progress: the prompt's prefill, then tokens a few at a time, with the KV cache
// and the sampler's state held between calls. LlamaModel::generate runs one session to its end;
// the binding's Decoder steps one from JS, which decides between steps whether rows stop (stop
// strings), so that streaming, stop strings and abort share generate's loop and sampler. One
// session per generation rather than a per-token callback into JS: the loop stays native, JS sets
// the pace (n tokens per call, a stream awaits each piece), and nothing calls back across threads.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <vector>

#include "core/llama.h"

namespace jfa {

// Throws a Range error naming `op`, the option and its value for a bad generation option.
void check_generate_options(const GenerateOptions& o, const char* op);

// The next token of each row of `logits` (n, vocab) float32, as transformers' generate picks it:
// the repetition penalty on the tokens marked in `seen` (n, vocab) bool (undefined: none), then
// greedy (temperature 0), or temperature, top-k, top-p and a draw with `gen` (on the CPU, so that a
// seed gives the same tokens on every device).
at::Tensor sample_tokens(at::Tensor logits, const at::Tensor& seen, const GenerateOptions& o, std::optional<at::Generator>& gen);

class DecodeSession {
 public:
  // Checks its arguments and runs the left-padded prompts ids (b, t) (mask (b, t), undefined: all
  // real) through the model, filling the cache. `model` must outlive the session, unchanged.
  DecodeSession(const LlamaModel& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                const GenerateOptions& options, bool adapters, const LatentCall* latent, const char* op = "generate");

  // Up to n more tokens per row: (b, k) int64 with k <= n, pad_token_id in rows that have stopped;
  // k is 0 once done. Ends early when cancel() was called.
  at::Tensor step(int64_t n);
  // Rows (indices into the batch) that stop now: they take padding from here on and leave the
  // batch's compute. Not while step() runs.
  void stop(const std::vector<int64_t>& rows);
  // Makes a running step() return after its current token; the session is then done. Any thread.
  void cancel() { cancelled_ = true; }

  // Every row has stopped, max_new_tokens were made, or it was cancelled. The cache is freed then.
  bool done() const { return done_; }
  int64_t batch_size() const { return batch_; }
  // Tokens made per row so far.
  int64_t produced() const { return produced_; }

  // Next-token logits (n, vocab) float32 from the final hidden states of each row's last position (n, hidden).
  static at::Tensor next_logits(const LlamaModel& model, const at::Tensor& last);

 private:
  // Feeds the tokens sampled last (after dropping ended rows from the batch) and sets logits_.
  void advance();
  void finish();
  const LatentCall* latent_call() const { return mix_ ? &*mix_ : nullptr; }

  const LlamaModel& model_;
  GenerateOptions o_;
  bool adapters_;
  int64_t batch_ = 0, prompt_ = 0, produced_ = 0;
  KvCache cache_;
  std::optional<LatentCall> mix_;    // latent tasks of the live rows
  std::optional<at::Generator> gen_;
  at::Tensor eos_;
  // Live rows only, in the order of rows_ (their indices in the batch):
  at::Tensor rows_, finished_, next_pos_, key_mask_;
  at::Tensor next_;    // the tokens sampled last, not yet fed
  at::Tensor logits_;  // the next tokens' logits (n, vocab) float32, or undefined until advance()
  at::Tensor seen_;    // (n, vocab) bool: tokens already in each sequence (repetition penalty), or undefined
  bool stopped_any_ = false, done_ = false;
  std::atomic<bool> cancelled_{false};
};

}  // namespace jfa
