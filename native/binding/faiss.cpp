// FAISS for JS: the Index class and k-means. Vectors are read straight out of the caller's
// Float32Array and results are written straight into the typed arrays handed back: no copies.
#include "binding/faiss.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "binding/boundary.h"
#include "binding/worker.h"
#include "core/faiss_index.h"
#include "core/runtime.h"

namespace jfa::binding {
namespace {

Napi::Float32Array float32_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  const Napi::Value v = info[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw Napi::TypeError::New(info.Env(), std::string(op) + ": " + name + " must be a Float32Array, got " + describe(v));
  return v.As<Napi::Float32Array>();
}

// An ArrayBuffer for `count` results of `size` bytes each, or a RangeError naming the op.
Napi::ArrayBuffer result_buffer(Napi::Env env, const char* op, double count, size_t size) {
  napi_value out = nullptr;
  if (count > 0x1p52 / static_cast<double>(size) ||
      napi_create_arraybuffer(env, static_cast<size_t>(count) * size, nullptr, &out) != napi_ok) {
    napi_value ignored = nullptr;
    napi_get_and_clear_last_exception(env, &ignored);
    char text[32];
    std::snprintf(text, sizeof text, "%.0f", count);
    throw Napi::RangeError::New(env, std::string(op) + ": cannot allocate " + text + " results");
  }
  return Napi::ArrayBuffer(env, out);
}

// {distances: Float32Array, labels: BigInt64Array} for n queries, and where to write them.
struct SearchResults {
  Napi::Object object;
  float* distances;
  int64_t* labels;
};

SearchResults search_results(Napi::Env env, const char* op, int64_t n, int64_t k) {
  const double count = k > 0 ? static_cast<double>(n) * static_cast<double>(k) : 0;  // core rejects k < 1
  auto distances = Napi::Float32Array::New(env, static_cast<size_t>(count), result_buffer(env, op, count, 4), 0);
  auto labels = Napi::BigInt64Array::New(env, static_cast<size_t>(count), result_buffer(env, op, count, 8), 0);
  Napi::Object object = Napi::Object::New(env);
  object.Set("distances", distances);
  object.Set("labels", labels);
  return {object, distances.Data(), labels.Data()};
}

// A live Index in the process; handed from load() to the constructor, like tensor handles' g_pending.
thread_local std::shared_ptr<FaissIndex>* g_loaded = nullptr;

// The JS Index. It shares ownership of the FaissIndex with any async task running on it, so
// dispose() frees the index at once when idle, else as soon as the last task finishes.
class IndexHandle : public CheckedWrap<IndexHandle> {
 public:
  static Napi::Function define(Napi::Env env, Signatures& sig) {
    return DefineClass(env, "Index",
                       {
                           InstanceAccessor<&IndexHandle::get_kind>("kind"),
                           InstanceAccessor<&IndexHandle::get_metric>("metric"),
                           InstanceAccessor<&IndexHandle::get_dim>("dim"),
                           InstanceAccessor<&IndexHandle::get_ntotal>("ntotal"),
                           InstanceAccessor<&IndexHandle::get_disposed>("disposed"),
                           InstanceAccessor<&IndexHandle::get_ef_search, &IndexHandle::set_ef_search>("efSearch"),
                           method<&IndexHandle::add, 1>(sig, "Index", "add", "Index.add"),
                           method<&IndexHandle::add_async, 1>(sig, "Index", "addAsync", "Index.addAsync"),
                           method<&IndexHandle::search, 2>(sig, "Index", "search", "Index.search"),
                           method<&IndexHandle::search_async, 2>(sig, "Index", "searchAsync", "Index.searchAsync"),
                           method<&IndexHandle::reset, 0>(sig, "Index", "reset", "Index.reset"),
                           method<&IndexHandle::save, 1>(sig, "Index", "save", "Index.save"),
                           method<&IndexHandle::dispose, 0>(sig, "Index", "dispose", "Index.dispose"),
                           static_method<&IndexHandle::load, 1>(sig, "Index", "load", "Index.load"),
                       });
  }

  explicit IndexHandle(const Napi::CallbackInfo& info) : CheckedWrap<IndexHandle>(info) {
    guard(info.Env(), "Index.create", [&]() -> Napi::Value {
      if (g_loaded) {
        index_ = std::move(*g_loaded);
        g_loaded = nullptr;
      } else {
        const Options options(info, 0, "Index.create", "options", true);
        index_ = FaissIndex::create(options.string("kind", ""), options.required_integer("dim"),
                                    options.string("metric", ""), options.integer("hnswM", 32));
        if (options.has("efSearch")) index_->set_ef_search(options.required_integer("efSearch"));
      }
      report(info.Env());
      return info.Env().Undefined();
    });
  }

  ~IndexHandle() override {
    int64_t ignored = 0;
    if (reported_) napi_adjust_external_memory(Env(), -reported_, &ignored);  // the C call: finalizers must not throw
  }

 private:
  std::shared_ptr<FaissIndex> live(const Napi::CallbackInfo& info, const char* op) const {
    if (!index_) throw Napi::TypeError::New(info.Env(), std::string(op) + ": the index is disposed");
    return index_;
  }

  // Tells V8 how much native memory this handle keeps alive, so the GC weighs it.
  void report(Napi::Env env) {
    const int64_t bytes = index_ ? index_->memory_bytes() : 0;
    if (bytes != reported_) Napi::MemoryManagement::AdjustExternalMemory(env, bytes - reported_);
    reported_ = bytes;
  }

  Napi::Value get_kind(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "Index.kind", [&]() -> Napi::Value {
      return Napi::String::New(info.Env(), live(info, "Index.kind")->kind());
    });
  }
  Napi::Value get_metric(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "Index.metric", [&]() -> Napi::Value {
      return Napi::String::New(info.Env(), live(info, "Index.metric")->metric());
    });
  }
  Napi::Value get_dim(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "Index.dim", [&]() -> Napi::Value {
      return Napi::Number::New(info.Env(), static_cast<double>(live(info, "Index.dim")->dim()));
    });
  }
  Napi::Value get_ntotal(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "Index.ntotal", [&]() -> Napi::Value {
      return Napi::Number::New(info.Env(), static_cast<double>(live(info, "Index.ntotal")->ntotal()));
    });
  }
  Napi::Value get_disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !index_); }

  Napi::Value get_ef_search(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "Index.efSearch", [&]() -> Napi::Value {
      const int64_t ef = live(info, "Index.efSearch")->ef_search();
      return ef ? Napi::Number::New(info.Env(), static_cast<double>(ef)) : info.Env().Undefined();
    });
  }
  void set_ef_search(const Napi::CallbackInfo& info, const Napi::Value& value) {
    guard(info.Env(), "Index.efSearch", [&]() -> Napi::Value {
      live(info, "Index.efSearch")->set_ef_search(integer_value(info.Env(), value, "Index.efSearch: value"));
      return info.Env().Undefined();
    });
  }

  Napi::Value add(const Napi::CallbackInfo& info) {
    const char* op = "Index.add";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      const auto index = live(info, op);
      const auto vectors = float32_arg(info, 0, op, "vectors");
      index->add(vector_rows(op, "vectors", vectors.ElementLength(), index->dim()), index->dim(), vectors.Data());
      report(info.Env());
      return info.Env().Undefined();
    });
  }

  Napi::Value add_async(const Napi::CallbackInfo& info) {
    const char* op = "Index.addAsync";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      const auto index = live(info, op);
      const auto vectors = float32_arg(info, 0, op, "vectors");
      const int64_t n = vector_rows(op, "vectors", vectors.ElementLength(), index->dim());
      const float* data = vectors.Data();
      return queue_async(info.Env(), {op, [index, n, data] { index->add(n, index->dim(), data); }, {vectors, info.This()},
                                      [](Napi::Env env, const std::vector<Napi::Value>& kept) -> Napi::Value {
                                        Unwrap(kept[1].As<Napi::Object>())->report(env);
                                        return env.Undefined();
                                      },
                                      nullptr});
    });
  }

  Napi::Value search(const Napi::CallbackInfo& info) {
    const char* op = "Index.search";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      const auto index = live(info, op);
      const auto queries = float32_arg(info, 0, op, "queries");
      const int64_t n = vector_rows(op, "queries", queries.ElementLength(), index->dim());
      const int64_t k = int_arg(info, 1, op, "k", 0);
      const SearchResults out = search_results(info.Env(), op, n, k);
      index->search(n, index->dim(), queries.Data(), k, out.distances, out.labels);
      return out.object;
    });
  }

  Napi::Value search_async(const Napi::CallbackInfo& info) {
    const char* op = "Index.searchAsync";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      const auto index = live(info, op);
      const auto queries = float32_arg(info, 0, op, "queries");
      const int64_t n = vector_rows(op, "queries", queries.ElementLength(), index->dim());
      const int64_t k = int_arg(info, 1, op, "k", 0);
      const SearchResults out = search_results(info.Env(), op, n, k);
      const float* data = queries.Data();
      return queue_async(info.Env(), {op,
                                      [index, n, data, k, distances = out.distances, labels = out.labels] {
                                        index->search(n, index->dim(), data, k, distances, labels);
                                      },
                                      {queries, out.object},
                                      [](Napi::Env, const std::vector<Napi::Value>& kept) { return kept[1]; }, nullptr});
    });
  }

  Napi::Value reset(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "Index.reset", [&]() -> Napi::Value {
      live(info, "Index.reset")->reset();
      report(info.Env());
      return info.Env().Undefined();
    });
  }

  Napi::Value save(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "Index.save", [&]() -> Napi::Value {
      const auto index = live(info, "Index.save");
      if (!info[0].IsString())
        throw Napi::TypeError::New(info.Env(), "Index.save: path must be a string, got " + describe(info[0]));
      index->save(info[0].As<Napi::String>().Utf8Value());
      return info.Env().Undefined();
    });
  }

  Napi::Value dispose(const Napi::CallbackInfo& info) {
    index_.reset();
    report(info.Env());
    return info.Env().Undefined();
  }

  static Napi::Value load(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "Index.load", [&]() -> Napi::Value {
      if (!info[0].IsString())
        throw Napi::TypeError::New(info.Env(), "Index.load: path must be a string, got " + describe(info[0]));
      std::shared_ptr<FaissIndex> index = FaissIndex::load(info[0].As<Napi::String>().Utf8Value());
      g_loaded = &index;
      try {
        if (!info.This().IsFunction()) throw Napi::TypeError::New(info.Env(), "Index.load: call it as Index.load(path)");
        Napi::Object object = info.This().As<Napi::Function>().New({});
        g_loaded = nullptr;
        return object;
      } catch (...) {
        g_loaded = nullptr;
        throw;
      }
    });
  }

  std::shared_ptr<FaissIndex> index_;
  int64_t reported_ = 0;
};

// ---- k-means ------------------------------------------------------------------------------------

struct KMeansCall {
  Napi::Float32Array data;
  int64_t n, d, k;
  KMeansOptions options;
  Napi::Object out;  // {centroids: Float32Array(k*d), assignments: Int32Array(n)}; objective comes last
  float* centroids;
  int32_t* assignments;
};

KMeansCall kmeans_call(const Napi::CallbackInfo& info, const char* op) {
  Napi::Env env = info.Env();
  KMeansCall call{float32_arg(info, 0, op, "data"), 0, 0, 0, {}, Napi::Object(), nullptr, nullptr};
  const Options options(info, 1, op, "options", true);
  call.d = options.required_integer("dim");
  call.k = options.required_integer("k");
  call.options.iterations = options.integer("iterations", call.options.iterations);
  call.options.seed = options.integer("seed", call.options.seed);
  call.options.spherical = options.boolean("spherical", false);
  call.n = vector_rows(op, "data", call.data.ElementLength(), call.d);
  const int64_t k = call.k >= 1 && call.k <= call.n ? call.k : 0;  // core rejects any other k before writing
  auto centroids = Napi::Float32Array::New(env, static_cast<size_t>(k * call.d),
                                           result_buffer(env, op, static_cast<double>(k * call.d), 4), 0);
  auto assignments =
      Napi::Int32Array::New(env, static_cast<size_t>(call.n), result_buffer(env, op, static_cast<double>(call.n), 4), 0);
  call.out = Napi::Object::New(env);
  call.out.Set("centroids", centroids);
  call.out.Set("assignments", assignments);
  call.centroids = centroids.Data();
  call.assignments = assignments.Data();
  return call;
}

Napi::Value kmeans_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "kmeans", [&]() -> Napi::Value {
    const KMeansCall c = kmeans_call(info, "kmeans");
    const double objective = kmeans(c.data.Data(), c.n, c.d, c.k, c.options, c.centroids, c.assignments);
    c.out.Set("objective", objective);
    return c.out;
  });
}

Napi::Value kmeans_async_fn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), "kmeansAsync", [&]() -> Napi::Value {
    const KMeansCall c = kmeans_call(info, "kmeansAsync");
    auto objective = std::make_shared<double>(0);
    return queue_async(info.Env(), {"kmeansAsync",
                                    [c_data = c.data.Data(), n = c.n, d = c.d, k = c.k, options = c.options, centroids = c.centroids,
                                     assignments = c.assignments, objective] {
                                      *objective = kmeans(c_data, n, d, k, options, centroids, assignments);
                                    },
                                    {c.data, c.out},
                                    [objective](Napi::Env, const std::vector<Napi::Value>& kept) -> Napi::Value {
                                      kept[1].As<Napi::Object>().Set("objective", *objective);
                                      return kept[1];
                                    },
                                    nullptr});
  });
}

}  // namespace

void register_faiss(Napi::Env env, Napi::Object exports, Signatures& signatures) {
  exports.Set("Index", IndexHandle::define(env, signatures));
  export_functions(env, exports, signatures, {{"kmeans", 2, kmeans_fn}, {"kmeansAsync", 2, kmeans_async_fn}});
}

}  // namespace jfa::binding
