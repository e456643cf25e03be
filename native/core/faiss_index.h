#pragma once
// Nearest-neighbour search and k-means on FAISS, with every input checked before FAISS sees it
// (FAISS asserts abort or throw bare messages) and every FAISS exception rethrown as jfa::Error.
// Vectors are row-major float32, n rows of `dim`. Labels are int64_t: faiss's idx_t under both its
// old (Index::idx_t) and new (faiss::idx_t) spelling.
#include <atomic>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>

#include "core/errors.h"

namespace faiss {
struct Index;
}

namespace jfa {

// Rows in a flat buffer of `length` floats; throws a Range error naming `op` and `name` unless
// `length` is a multiple of `dim`.
int64_t vector_rows(const char* op, const char* name, size_t length, int64_t dim);

// One index. Thread-safe: searches and saves share a lock, add/reset/set_ef_search take it alone,
// so async work on the libuv pool and calls from the main thread may overlap.
class FaissIndex {
 public:
  // kind: "flat-ip", "flat-l2" or "hnsw". metric: "ip" or "l2"; for flat kinds it may be empty or
  // must agree with the kind; for hnsw empty means "l2". hnsw_m: neighbours per node (hnsw only).
  static std::unique_ptr<FaissIndex> create(const std::string& kind, int64_t dim, const std::string& metric,
                                            int64_t hnsw_m);
  static std::unique_ptr<FaissIndex> load(const std::string& path);
  ~FaissIndex();

  void add(int64_t n, int64_t dim, const float* vectors);
  // k results per query, best first. Slots beyond ntotal (k > ntotal, or an empty index) get
  // label -1 and the worst distance: +infinity for l2, -infinity for ip. Distances are squared L2
  // or inner products, as FAISS reports them.
  void search(int64_t n, int64_t dim, const float* queries, int64_t k, float* distances, int64_t* labels) const;
  void reset();
  // Atomic: writes a temporary file beside `path`, fsyncs it, then renames it over `path`.
  void save(const std::string& path) const;

  const std::string& kind() const { return kind_; }
  const std::string& metric() const { return metric_; }
  int64_t dim() const { return dim_; }
  int64_t ntotal() const;
  // Bytes held by the stored vectors and graph: what the binding reports to the GC.
  int64_t memory_bytes() const;
  // hnsw only (0 for flat kinds): candidates kept while searching (higher: better recall, slower).
  int64_t ef_search() const;
  void set_ef_search(int64_t ef);

 private:
  FaissIndex(std::unique_ptr<faiss::Index> index, std::string kind, std::string metric);

  std::unique_ptr<faiss::Index> index_;
  std::string kind_;
  std::string metric_;
  int64_t dim_;
  // Mirrors readable without the lock, so the main thread never waits on a running add.
  std::atomic<int64_t> ntotal_{0};
  std::atomic<int64_t> bytes_{0};
  mutable std::shared_mutex mutex_;
};

struct KMeansOptions {
  int64_t iterations = 25;  // FAISS's default
  // Of the k-means++ start. Same data and options, same result (on one machine and thread count:
  // BLAS may round differently elsewhere, which can flip a near tie).
  int64_t seed = 1234;
  // Centroids normalised to unit length and points assigned by inner product (cosine k-means
  // when the data is normalised too).
  bool spherical = false;
};

// Lloyd's k-means (faiss::Clustering) of n points of dimension d into k clusters, on all points
// (no subsampling), from a greedy k-means++ start. Writes k*d centroids and n assignments; returns
// the objective of that pair: the sum of squared distances to the assigned centroids (spherical:
// the sum of inner products).
double kmeans(const float* data, int64_t n, int64_t d, int64_t k, const KMeansOptions& options, float* centroids,
              int32_t* assignments);

}  // namespace jfa
