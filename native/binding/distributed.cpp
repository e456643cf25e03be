// ProcessGroup for JS: joining a data-parallel group and its collectives, each on the libuv pool
// behind a Promise (they wait on other processes).
#include "binding/distributed.h"

#include <memory>
#include <utility>
#include <vector>

#include "binding/tensor.h"
#include "binding/worker.h"
#include "core/device.h"
#include "core/distributed.h"

namespace jfa::binding {
namespace {

// Marks our handles, so group_arg recognises them without a class reference in the addon's data.
constexpr napi_type_tag kGroupTag = {0x6a66612d64697374ULL, 0x2d67726f75702d31ULL};

class Group : public CheckedWrap<Group> {
 public:
  static Napi::Function define(Napi::Env env, Signatures& sig) {
    return DefineClass(env, "ProcessGroup",
                       {
                           InstanceAccessor<&Group::rank>("rank"),
                           InstanceAccessor<&Group::world_size>("worldSize"),
                           InstanceAccessor<&Group::backend>("backend"),
                           InstanceAccessor<&Group::connected>("connected"),
                           method<&Group::connect_async, 0>(sig, "ProcessGroup", "connectAsync", "processGroup.connect"),
                           method<&Group::all_reduce_async, 2>(sig, "ProcessGroup", "allReduceAsync", "processGroup.allReduce"),
                           method<&Group::broadcast_async, 2>(sig, "ProcessGroup", "broadcastAsync", "processGroup.broadcast"),
                           method<&Group::barrier_async, 0>(sig, "ProcessGroup", "barrierAsync", "processGroup.barrier"),
                           method<&Group::exchange_async, 2>(sig, "ProcessGroup", "exchangeAsync", "processGroup.exchange"),
                           method<&Group::dispose, 0>(sig, "ProcessGroup", "dispose", "processGroup.dispose"),
                       });
  }

  // new ProcessGroup({rank, worldSize, masterAddr, masterPort, timeoutMs, backend, device}): checked
  // here, joined by connectAsync().
  explicit Group(const Napi::CallbackInfo& info) : CheckedWrap<Group>(info) {
    const char* op = "ProcessGroup";
    guard(info.Env(), op, [&]() -> Napi::Value {
      check_arity(info, 1, op);
      const Options o(info, 0, op, "options", true);
      options_.rank = static_cast<int>(o.required_integer("rank", 0, 1 << 20));
      options_.world_size = static_cast<int>(o.required_integer("worldSize", 1, 1 << 20));
      options_.master_addr = o.string("masterAddr", "127.0.0.1");
      options_.master_port = static_cast<int>(o.integer("masterPort", 29500, 1, 65535));
      options_.timeout_ms = o.integer("timeoutMs", 60000, 1);
      options_.heartbeat_ms = o.integer("heartbeatMs", 500, 10);
      options_.backend = o.choice("backend", {"auto", "gloo", "nccl"}, "auto");
      // The device of the tensors this rank's collectives carry (checked: a GPU that is there).
      options_.device = parse_device(o.string("device", "cpu"), op);
      if (options_.rank >= options_.world_size)
        throw Napi::RangeError::New(info.Env(), "distributed: RANK " + std::to_string(options_.rank) + " is out of range for WORLD_SIZE " +
                                                    std::to_string(options_.world_size) + " (ranks are 0.." + std::to_string(options_.world_size - 1) + ")");
      napi_type_tag_object(info.Env(), info.This(), &kGroupTag);
      return info.Env().Undefined();
    });
  }

  std::shared_ptr<ProcessGroup> live(const std::string& where) const {
    if (!group_) throw Napi::Error::New(Env(), where + ": the process group is " + (disposed_ ? "disposed" : "not connected (await connect() first)"));
    return group_;
  }

 private:
  Napi::Value rank(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), options_.rank); }
  Napi::Value world_size(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), options_.world_size); }
  Napi::Value backend(const Napi::CallbackInfo& info) {
    return group_ ? Napi::String::New(info.Env(), group_->backend_name()) : info.Env().Null();
  }
  Napi::Value connected(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), static_cast<bool>(group_)); }

  // Rendezvous: waits for every rank (up to the timeout) off the main thread.
  Napi::Value connect_async(const Napi::CallbackInfo& info) {
    const char* op = "processGroup.connect";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      if (group_ || connecting_) throw Napi::Error::New(info.Env(), std::string(op) + ": already connected or connecting");
      if (disposed_) throw Napi::Error::New(info.Env(), std::string(op) + ": the process group is disposed");
      connecting_ = true;
      auto made = std::make_shared<std::shared_ptr<ProcessGroup>>();
      return queue_async(info.Env(), {op, [made, o = options_] { *made = std::make_shared<ProcessGroup>(o); },
                                      {info.This()},
                                      [made, this](Napi::Env env, const std::vector<Napi::Value>&) -> Napi::Value {
                                        if (!disposed_) group_ = *made;
                                        return env.Undefined();
                                      },
                                      [this] { connecting_ = false; }});
    });
  }

  // allReduceAsync(tensors, {bucket: 'flat' | 'tensor', scale}): summed over the ranks in place.
  Napi::Value all_reduce_async(const Napi::CallbackInfo& info) {
    const char* op = "processGroup.allReduce";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      auto g = live(op);
      auto tensors = tensor_list(info, info[0], std::string(op) + ": tensors");
      const Options o(info, 1, op);
      const bool flat = o.choice("bucket", {"flat", "tensor"}, "flat") == "flat";
      const double scale = o.number("scale", 1.0);
      return queue_async(info.Env(), {op, [g, tensors, flat, scale]() mutable {
                                        g->all_reduce(tensors, flat ? Bucketing::Flat : Bucketing::PerTensor, scale, "allReduce");
                                      },
                                      {info[0]}, nullptr, nullptr});
    });
  }

  // broadcastAsync(tensors, root): rank root's values into every rank's tensors, in place.
  Napi::Value broadcast_async(const Napi::CallbackInfo& info) {
    const char* op = "processGroup.broadcast";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      auto g = live(op);
      auto tensors = tensor_list(info, info[0], std::string(op) + ": tensors");
      const int root = static_cast<int>(int_arg(info, 1, op, "root", 0, 0, g->world_size() - 1));
      return queue_async(info.Env(), {op, [g, tensors, root]() mutable { g->broadcast(tensors, root, "broadcast from rank " + std::to_string(root)); },
                                      {info[0]}, nullptr, nullptr});
    });
  }

  Napi::Value barrier_async(const Napi::CallbackInfo& info) {
    const char* op = "processGroup.barrier";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      auto g = live(op);
      return queue_async(info.Env(), {op, [g] { g->barrier("barrier"); }, {}, nullptr, nullptr});
    });
  }

  // exchangeAsync(key, value): every rank's string under key, by rank (through the store).
  Napi::Value exchange_async(const Napi::CallbackInfo& info) {
    const char* op = "processGroup.exchange";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      auto g = live(op);
      if (!info[0].IsString()) throw Napi::TypeError::New(info.Env(), std::string(op) + ": key must be a string, got " + describe(info[0]));
      if (!info[1].IsString()) throw Napi::TypeError::New(info.Env(), std::string(op) + ": value must be a string, got " + describe(info[1]));
      auto out = std::make_shared<std::vector<std::string>>();
      return queue_async(info.Env(), {op, [g, out, key = info[0].As<Napi::String>().Utf8Value(), value = info[1].As<Napi::String>().Utf8Value()] {
                                        *out = g->exchange(key, value);
                                      },
                                      {},
                                      [out](Napi::Env env, const std::vector<Napi::Value>&) -> Napi::Value {
                                        auto arr = Napi::Array::New(env, out->size());
                                        for (uint32_t i = 0; i < out->size(); ++i) arr.Set(i, (*out)[i]);
                                        return arr;
                                      },
                                      nullptr});
    });
  }

  // Leaves the group (stops the heartbeat); work already started keeps its own reference.
  Napi::Value dispose(const Napi::CallbackInfo& info) {
    group_.reset();
    disposed_ = true;
    return info.Env().Undefined();
  }

  GroupOptions options_;
  std::shared_ptr<ProcessGroup> group_;
  bool connecting_ = false;
  bool disposed_ = false;
};

}  // namespace

std::shared_ptr<ProcessGroup> group_arg(Napi::Env env, const Napi::Value& v, const std::string& where) {
  bool tagged = false;
  if (v.IsObject()) napi_check_object_type_tag(env, v, &kGroupTag, &tagged);
  if (!tagged) throw Napi::TypeError::New(env, where + " must be a ProcessGroup, got " + describe(v));
  return Group::Unwrap(v.As<Napi::Object>())->live(where);
}

void register_distributed(Napi::Env env, Napi::Object exports, Signatures& signatures) {
  exports.Set("ProcessGroup", Group::define(env, signatures));
  exports.Set("ncclBuilt", Napi::Boolean::New(env, nccl_built()));
}

}  // namespace jfa::binding
