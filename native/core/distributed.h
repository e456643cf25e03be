#pragma once
// Data-parallel training's process group, on libtorch's own c10d: rendezvous through a TCPStore at
// MASTER_ADDR:MASTER_PORT (rank 0 hosts it), collectives through ProcessGroupGloo (CPU tensors) or
// ProcessGroupNCCL (CUDA tensors, where the found libtorch has it). No home-made sockets or
// collectives: this file only wires c10d up, names ranks in errors and watches for dead ones.
#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

namespace jfa {

struct GroupOptions {
  int rank = 0;
  int world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // Rendezvous, every collective and the start-up exchange give up after this long.
  int64_t timeout_ms = 60000;
  // "gloo", "nccl" or "auto" (NCCL for cuda tensors where built, else Gloo)
  std::string backend = "auto";
  // Where this rank's tensors live: a CUDA device makes auto mean NCCL (where built), and is the
  // GPU an NCCL group binds to and stages CPU tensors through.
  c10::Device device{c10::kCPU};
  // Hosts and ports are not enough to name a rank after a failure: every rank bumps a heartbeat
  // key in the store this often; a rank whose key stopped moving is the one that died or hung.
  int64_t heartbeat_ms = 500;
};

// How a list of gradients goes over the wire: one flat buffer (one collective), or one collective per tensor.
enum class Bucketing { Flat, PerTensor };

// An all-reduce started and not yet waited for.
class PendingReduce {
 public:
  PendingReduce() = default;
  // Blocks until done and copies the results back into the tensors it was started on.
  void wait();
  bool active() const { return !works_.empty(); }

 private:
  friend class ProcessGroup;
  class ProcessGroup* group_ = nullptr;
  std::vector<c10::intrusive_ptr<c10d::Work>> works_;
  std::vector<at::Tensor> targets_;  // where the flat buffer's results go (Flat)
  at::Tensor flat_;
  std::string what_;
};

class ProcessGroup {
 public:
  // Joins the group (blocking: waits for every rank up to the timeout). Errors name this rank,
  // the address and the cause: a port in use, a WORLD_SIZE other ranks disagree with, a rank that
  // never came.
  explicit ProcessGroup(const GroupOptions& options);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }
  const GroupOptions& options() const { return options_; }
  const std::string& backend_name() const { return backend_name_; }

  // Sum over ranks, in place, then times `scale`. `what` names the call in errors ("step 3").
  void all_reduce(std::vector<at::Tensor>& tensors, Bucketing bucketing, double scale, const std::string& what);
  // The same, started now and finished by PendingReduce::wait() (overlaps with later compute).
  PendingReduce all_reduce_async(std::vector<at::Tensor> tensors, Bucketing bucketing, const std::string& what);
  // Rank `root`'s values into every rank's tensors (same shapes everywhere), in place.
  void broadcast(std::vector<at::Tensor>& tensors, int root, const std::string& what);
  void barrier(const std::string& what);
  // Every rank's `value` under `key`, by rank (through the store; for start-up checks).
  std::vector<std::string> exchange(const std::string& key, const std::string& value);

  // A collective failed: why, naming the rank that stopped when the heartbeats tell.
  [[noreturn]] void fail(const std::string& what, const std::exception& cause);

  // The heartbeat thread's state, shared with it: the thread may outlive the group (see ~ProcessGroup).
  struct Beat;

 private:
  std::string stale_ranks();
  std::string where() const;
  bool nccl() const { return backend_name_ == "nccl"; }
  // Gloo skips the collectives of a world of one; NCCL runs them (a device copy), so that one GPU
  // checks the whole NCCL path: staging, streams, the communicator.
  bool alone() const { return options_.world_size == 1 && !nccl(); }
  // A tensor as it goes over the wire: NCCL carries CUDA tensors only, so a CPU one (the step's
  // losses, the optimizer's step count, rank 0's retrieval) travels as a copy on this rank's GPU.
  at::Tensor on_wire(const at::Tensor& t) const { return nccl() && !t.is_cuda() ? t.to(options_.device) : t; }

  GroupOptions options_;
  std::string backend_name_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Backend> backend_;
  uint64_t exchanges_ = 0;
  std::shared_ptr<Beat> beat_;
  bool failed_ = false;  // a collective failed: NCCL's communicators are aborted, not shut down
};

// True when this build can make an NCCL group (a CUDA libtorch with c10d's NCCL backend).
bool nccl_built();

}  // namespace jfa
