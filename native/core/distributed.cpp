#include "core/distributed.h"

#include <ATen/ATen.h>
#include <arpa/inet.h>
#include <c10/util/Exception.h>
#include <c10/util/Logging.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef JFA_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <condition_variable>
#include <cstdlib>
#include <future>
#include <mutex>
#include <optional>
#include <thread>

#include "core/errors.h"

namespace jfa {
namespace {

using Ms = std::chrono::milliseconds;

// The first line of an exception's message, without c10's backtrace: errors stay one line.
std::string cause_of(const std::exception& e) {
  const auto* c10 = dynamic_cast<const c10::Error*>(&e);
  std::string s = c10 ? c10->what_without_backtrace() : e.what();
  const auto nl = s.find('\n');
  if (nl != std::string::npos) s.resize(nl);
  return s;
}

bool loopback(const std::string& host) { return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1"; }

// This host's address on the way to `host`: the source address the kernel picks for a UDP socket
// connected there (connecting a UDP socket sends nothing). Rank 0 gets its own MASTER_ADDR back.
// Empty when it cannot tell. The host name's address, Gloo's default, is often loopback (Debian's
// /etc/hosts, containers, network namespaces), and a rank bound there is unreachable from the others.
std::string route_source(const std::string& host) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), "9", &hints, &found) != 0 || !found) return "";
  std::string out;
  const int fd = socket(found->ai_family, SOCK_DGRAM, 0);
  sockaddr_storage local{};
  socklen_t len = sizeof(local);
  if (fd >= 0 && connect(fd, found->ai_addr, found->ai_addrlen) == 0 && getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
    char text[INET6_ADDRSTRLEN] = {};
    const void* a = local.ss_family == AF_INET6 ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr)
                                                 : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&local)->sin_addr);
    if (inet_ntop(local.ss_family, a, text, sizeof(text))) out = text;
  }
  if (fd >= 0) close(fd);
  freeaddrinfo(found);
  return out;
}

// fn() on a thread of its own, waited for up to `ms`: its result, its exception rethrown, or
// nullopt when it did not finish. c10d's store client reads replies with no deadline, so a store
// call on a connection whose peer vanished without closing it (a cut link, a host powered off)
// blocks for as long as TCP retransmits, a quarter of an hour. A call that overruns is left to
// finish (or not) on its detached thread, which owns everything fn captured (by value).
template <class F>
auto within(int64_t ms, F fn) -> std::optional<decltype(fn())> {
  using T = decltype(fn());
  auto promise = std::make_shared<std::promise<T>>();
  auto future = promise->get_future();
  std::thread([promise, fn = std::move(fn)]() mutable {
    try {
      promise->set_value(fn());
    } catch (...) {
      promise->set_exception(std::current_exception());
    }
  }).detach();
  if (future.wait_for(Ms(ms)) != std::future_status::ready) return std::nullopt;
  return future.get();
}

// c10d logs its own view of a failure to stderr, some of it with C++ backtraces ("Exception raised
// from ..."), before the exception reaches us; our errors already carry the cause in one line. Quiet
// unless the user asked for c10's logs (TORCH_CPP_LOG_LEVEL, read by c10 itself).
void quiet_c10d_logs() {
  const char* asked = std::getenv("TORCH_CPP_LOG_LEVEL");
  if (!asked || !*asked) FLAGS_caffe2_log_level = std::max(FLAGS_caffe2_log_level, 3);  // 3: FATAL only
}

c10::intrusive_ptr<c10d::TCPStore> connect_store(const GroupOptions& o, bool server) {
  c10d::TCPStoreOptions s;
  s.port = static_cast<std::uint16_t>(o.master_port);
  s.isServer = server;
  s.numWorkers = o.world_size;
  s.waitWorkers = false;  // our own hello exchange checks who came, with a message that says so
  s.timeout = Ms(o.timeout_ms);
  return c10::make_intrusive<c10d::TCPStore>(o.master_addr, s);
}

}  // namespace

bool nccl_built() {
#ifdef JFA_WITH_NCCL
  return true;
#else
  return false;
#endif
}

std::string ProcessGroup::where() const {
  return "distributed (rank " + std::to_string(options_.rank) + " of " + std::to_string(options_.world_size) + ", " +
         options_.master_addr + ":" + std::to_string(options_.master_port) + ")";
}

struct ProcessGroup::Beat {
  std::mutex mutex;
  std::condition_variable cv;
  bool stopping = false;
  bool done = false;
};

namespace {

// Bumps this rank's heartbeat key until told to stop, or until the store fails (the next collective reports that).
void heartbeat(std::shared_ptr<ProcessGroup::Beat> beat, GroupOptions o) {
  try {
    auto client = connect_store(o, false);
    const std::string key = "jfa/heartbeat/" + std::to_string(o.rank);
    std::unique_lock<std::mutex> lock(beat->mutex);
    while (!beat->stopping) {
      lock.unlock();
      client->add(key, 1);
      lock.lock();
      beat->cv.wait_for(lock, Ms(o.heartbeat_ms), [&] { return beat->stopping; });
    }
  } catch (const std::exception&) {
  }
  std::lock_guard<std::mutex> lock(beat->mutex);
  beat->done = true;
  beat->cv.notify_all();
}

}  // namespace

ProcessGroup::ProcessGroup(const GroupOptions& o) : options_(o) {
  if (o.world_size < 1) throw_range("distributed: WORLD_SIZE must be >= 1, got " + std::to_string(o.world_size));
  if (o.rank < 0 || o.rank >= o.world_size)
    throw_range("distributed: RANK " + std::to_string(o.rank) + " is out of range for WORLD_SIZE " + std::to_string(o.world_size) +
                " (ranks are 0.." + std::to_string(o.world_size - 1) + ")");
  if (o.master_port < 1 || o.master_port > 65535) throw_range("distributed: MASTER_PORT must be in 1..65535, got " + std::to_string(o.master_port));
  if (o.timeout_ms < 1) throw_range("distributed: timeoutMs must be >= 1, got " + std::to_string(o.timeout_ms));
  if (o.backend != "auto" && o.backend != "gloo" && o.backend != "nccl")
    throw_range("distributed: backend must be auto, gloo or nccl, got '" + o.backend + "'");
  if (o.backend == "nccl" && !nccl_built())
    throw_range("distributed: backend nccl needs a CUDA libtorch with c10d's NCCL backend; this build has only gloo");
  if (o.backend == "nccl" && !o.device.is_cuda())
    throw_range("distributed: backend nccl carries CUDA tensors only; this rank's tensors are on " + o.device.str() + " (use gloo, or a CUDA device)");

  if (o.world_size > 1) quiet_c10d_logs();
  try {
    store_ = connect_store(o, o.rank == 0);
  } catch (const std::exception& e) {
    const std::string cause = cause_of(e);
    if (o.rank == 0)
      throw_generic(where() + ": cannot listen on MASTER_PORT " + std::to_string(o.master_port) +
                    (cause.find("EADDRINUSE") != std::string::npos || cause.find("in use") != std::string::npos
                         ? " (the port is already in use: pick another --master-port)"
                         : "") +
                    ": " + cause);
    throw_generic(where() + ": cannot reach the store of rank 0 within " + std::to_string(o.timeout_ms) + " ms: " + cause);
  }
  // Everyone agrees on the world size before any collective waits on a rank that will never come.
  (void)exchange("world_size", std::to_string(o.world_size));

  try {
    const bool use_nccl = o.backend == "nccl" || (o.backend == "auto" && o.device.is_cuda() && nccl_built());
#ifdef JFA_WITH_NCCL
    if (use_nccl) {
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = Ms(o.timeout_ms);
      backend_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(store_, o.rank, o.world_size, opts);
      // Bound to this rank's GPU (as init_process_group's device_id): barriers use it, not a guess from the rank.
      options_.device = c10::Device(c10::kCUDA, o.device.has_index() ? o.device.index() : 0);
      backend_->setBoundDeviceId(options_.device);
      backend_name_ = "nccl";
    }
#endif
    if (!use_nccl) {
      auto opts = c10d::ProcessGroupGloo::Options::create(Ms(o.timeout_ms));
      // Each rank binds its own address: loopback when the master is local; otherwise the
      // interface GLOO_SOCKET_IFNAME names (as in torch), else the address this host reaches
      // MASTER_ADDR from, else (no route found) the address this host's name resolves to.
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      const std::string source = loopback(o.master_addr) || (ifname && *ifname) ? "" : route_source(o.master_addr);
      if (ifname && *ifname)
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      else if (loopback(o.master_addr))
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      else if (!source.empty())
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(source));
      else
        opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      opts->threads = 1;  // one collective in flight at a time is all a step starts
      backend_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store_, o.rank, o.world_size, opts);
      backend_name_ = "gloo";
    }
  } catch (const jfa::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw_generic(where() + ": cannot connect the ranks: " + cause_of(e));
  }
  if (o.world_size > 1) {
    beat_ = std::make_shared<Beat>();
    std::thread(heartbeat, beat_, options_).detach();
  }
  // NCCL makes its communicators at the first collective. One all-reduce of one number now, at any
  // world size: a GPU, driver or network NCCL cannot use fails here, naming the join, not in step 1.
  if (nccl()) {
    try {
      std::vector<at::Tensor> one{at::ones({1}, at::TensorOptions().device(options_.device))};
      all_reduce(one, Bucketing::PerTensor, 1.0, "NCCL's first all-reduce (communicator set-up)");
      const double got = one[0].item<double>();
      if (got != static_cast<double>(o.world_size))
        throw_generic(where() + ": NCCL's first all-reduce summed to " + std::to_string(got) + ", not the world size " + std::to_string(o.world_size));
    } catch (...) {
      // No destructor runs for a constructor that throws: the heartbeat is stopped here.
      if (beat_) {
        std::lock_guard<std::mutex> lock(beat_->mutex);
        beat_->stopping = true;
        beat_->cv.notify_all();
      }
      throw;
    }
  }
}

// Stops the heartbeat, waiting a moment (250 ms) for it: a live one stops in microseconds. A heartbeat blocked in a store call on a lost
// connection (the store's host cut off) would never return: it is left behind, detached, owning its
// state, rather than joined, which hung the rank that lost the store until it was killed.
ProcessGroup::~ProcessGroup() {
  // NCCL: shut down (its communicators destroyed) after a clean run; aborted after a failed
  // collective, where a shutdown could wait on a peer that is gone. Either keeps torch's destructor
  // from warning that the group was not destroyed.
#ifdef JFA_WITH_NCCL
  if (nccl() && backend_) {
    try {
      failed_ ? backend_->abort() : backend_->shutdown();
    } catch (const std::exception&) {
    }
  }
#endif
  if (!beat_) return;
  std::unique_lock<std::mutex> lock(beat_->mutex);
  beat_->stopping = true;
  beat_->cv.notify_all();
  beat_->cv.wait_for(lock, Ms(250), [this] { return beat_->done; });
}

// Ranks whose heartbeat did not move over a few periods: "rank 1 stopped responding"; or, when
// the store itself does not answer, rank 0 (which hosts it). Bounded: a few seconds whatever the network does.
std::string ProcessGroup::stale_ranks() {
  if (options_.world_size < 2) return "";
  GroupOptions probe_options = options_;
  probe_options.timeout_ms = std::min<int64_t>(options_.timeout_ms, 2000);
  const int64_t quiet_ms = options_.heartbeat_ms * 4;
  const std::string unreachable = "rank 0 cannot be reached (its store at " + options_.master_addr + ":" + std::to_string(options_.master_port) +
                                  " is gone or did not answer within " + std::to_string(probe_options.timeout_ms) + " ms: it died, or the network to it is down)";
  try {
    auto stale = within(probe_options.timeout_ms + quiet_ms + 1000, [o = probe_options, quiet_ms] {
      auto probe = connect_store(o, false);
      auto read = [&] {
        std::vector<int64_t> beats;
        for (int r = 0; r < o.world_size; ++r) beats.push_back(probe->add("jfa/heartbeat/" + std::to_string(r), 0));
        return beats;
      };
      const auto before = read();
      std::this_thread::sleep_for(Ms(quiet_ms));
      const auto after = read();
      std::string out;
      for (int r = 0; r < o.world_size; ++r)
        if (r != o.rank && before[r] == after[r]) out += (out.empty() ? "rank " : ", rank ") + std::to_string(r);
      return out;
    });
    if (!stale) return unreachable;
    return stale->empty() ? "" : *stale + " stopped responding (no heartbeat for " + std::to_string(quiet_ms) + " ms: it died, hung, or the network to it is down)";
  } catch (const std::exception&) {
    return unreachable;
  }
}

void ProcessGroup::fail(const std::string& what, const std::exception& cause) {
  failed_ = true;
  const std::string stale = stale_ranks();
  throw_generic(where() + ": " + what + " failed" + (stale.empty() ? "" : ": " + stale) + " (" + cause_of(cause) + ")");
}

std::vector<std::string> ProcessGroup::exchange(const std::string& key, const std::string& value) {
  const std::string base = "jfa/exchange/" + std::to_string(exchanges_++) + "/" + key + "/";
  std::vector<std::string> out(options_.world_size);
  const auto publish = [&] {
    try {
      store_->set(base + std::to_string(options_.rank), value);
    } catch (const std::exception& e) {
      throw_generic(where() + ": cannot publish " + key + " to the store: " + cause_of(e));
    }
  };
  const auto read = [&](int r) {
    const std::string late = where() + ": rank " + std::to_string(r) + " did not report its " + key + " within " +
                             std::to_string(options_.timeout_ms) + " ms (not started, another WORLD_SIZE, dead, or the network to rank 0 is down)";
    try {
      auto got = within(options_.timeout_ms + 1000, [store = store_, name = base + std::to_string(r), ms = options_.timeout_ms] {
        store->wait({name}, Ms(ms));
        return store->get_to_str(name);
      });
      if (!got) throw_generic(late);
      out[r] = *got;
    } catch (const jfa::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw_generic(late + ": " + cause_of(e));
    }
  };
  // Rank 0's value first: a rank that disagrees with it learns so at once, whoever else is missing.
  // The other ranks read it before they publish their own: rank 0 hosts the store and stops as soon
  // as it sees a disagreeing value, so a rank that published first could lose the store before
  // reading, and report a closed connection instead of the disagreement.
  if (options_.rank == 0) publish();
  for (int r = 0; r < options_.world_size; ++r) {
    read(r);
    if (r == 0 && options_.rank != 0) publish();
    if (key == "world_size" && out[r] != value)
      throw_range(where() + ": WORLD_SIZE differs between ranks: rank " + std::to_string(r) + " has " + out[r] + ", this rank " + value);
  }
  return out;
}

PendingReduce ProcessGroup::all_reduce_async(std::vector<at::Tensor> tensors, Bucketing bucketing, const std::string& what) {
  PendingReduce p;
  p.group_ = this;
  p.what_ = what;
  if (alone() || tensors.empty()) return p;
  c10d::AllreduceOptions opts;
  opts.reduceOp = c10d::ReduceOp::SUM;
  opts.timeout = Ms(options_.timeout_ms);
  // A CPU tensor in an NCCL group goes in the flat buffer, which is staged on the GPU and copied back by wait().
  bool staged = false;
  for (const auto& t : tensors) staged = staged || (nccl() && !t.is_cuda());
  try {
    if (bucketing == Bucketing::Flat || staged) {
      std::vector<at::Tensor> flat;
      flat.reserve(tensors.size());
      for (const auto& t : tensors) flat.push_back(on_wire(t.detach()).reshape({-1}));
      p.flat_ = at::cat(flat);
      std::vector<at::Tensor> buf{p.flat_};
      p.works_.push_back(backend_->allreduce(buf, opts));
      p.targets_ = std::move(tensors);
    } else {
      for (auto& t : tensors) {
        if (!t.is_contiguous()) throw_range(where() + ": " + what + ": per-tensor all-reduce needs contiguous tensors");
        std::vector<at::Tensor> one{t};
        p.works_.push_back(backend_->allreduce(one, opts));
      }
      p.targets_ = std::move(tensors);
    }
  } catch (const jfa::Error&) {
    throw;
  } catch (const std::exception& e) {
    fail(what, e);
  }
  return p;
}

void PendingReduce::wait() {
  if (works_.empty()) return;
  auto works = std::move(works_);
  works_.clear();
  try {
    for (auto& w : works) w->wait(std::chrono::milliseconds(group_->options().timeout_ms));
  } catch (const std::exception& e) {
    group_->fail(what_, e);
  }
  if (flat_.defined()) {
    int64_t at = 0;
    for (auto& t : targets_) {
      const int64_t n = t.numel();
      t.detach().copy_(flat_.narrow(0, at, n).view(t.sizes()));
      at += n;
    }
    flat_.reset();
  }
}

void ProcessGroup::all_reduce(std::vector<at::Tensor>& tensors, Bucketing bucketing, double scale, const std::string& what) {
  PendingReduce p = all_reduce_async(tensors, bucketing, what);
  p.wait();
  if (scale != 1.0) {
    at::NoGradGuard no_grad;
    for (auto& t : tensors) t.mul_(scale);
  }
}

void ProcessGroup::broadcast(std::vector<at::Tensor>& tensors, int root, const std::string& what) {
  if (root < 0 || root >= options_.world_size) throw_range(where() + ": broadcast root " + std::to_string(root) + " is not a rank");
  if (alone()) return;
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  opts.timeout = Ms(options_.timeout_ms);
  try {
    for (auto& t : tensors) {
      at::Tensor c = on_wire(t.detach()).contiguous();
      std::vector<at::Tensor> one{c};
      backend_->broadcast(one, opts)->wait(Ms(options_.timeout_ms));
      if (!c.is_same(t)) t.detach().copy_(c);
    }
  } catch (const jfa::Error&) {
    throw;
  } catch (const std::exception& e) {
    fail(what, e);
  }
}

void ProcessGroup::barrier(const std::string& what) {
  if (alone()) return;
  c10d::BarrierOptions opts;
  opts.timeout = Ms(options_.timeout_ms);
  try {
    backend_->barrier(opts)->wait(Ms(options_.timeout_ms));
  } catch (const std::exception& e) {
    fail(what, e);
  }
}

}  // namespace jfa
