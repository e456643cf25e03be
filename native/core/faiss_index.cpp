#include "core/faiss_index.h"

#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/impl/FaissException.h>
#include <faiss/index_io.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <limits>
#include <mutex>
#include <random>
#include <system_error>
#include <vector>

namespace jfa {
namespace {

constexpr int64_t kMaxInt = std::numeric_limits<int>::max();  // FAISS keeps d, k, M and seed in an int

std::string errno_text(int err) { return std::generic_category().message(err); }

// Runs a FAISS call; its exceptions become jfa::Error with the op in front.
template <typename F>
void faiss_call(const char* op, F&& fn) {
  try {
    fn();
  } catch (const faiss::FaissException& e) {
    throw_generic(std::string(op) + ": FAISS failed: " + e.what());
  }
}

void check_dim(const char* op, const char* name, int64_t dim) {
  if (dim < 1 || dim > kMaxInt)
    throw_range(std::string(op) + ": " + name + " must be an integer from 1 to " + std::to_string(kMaxInt) + ", got " +
                std::to_string(dim));
}

void check_same_dim(const char* op, const char* name, int64_t dim, int64_t index_dim) {
  if (dim != index_dim)
    throw_range(std::string(op) + ": " + name + " have dimension " + std::to_string(dim) + " but the index has dimension " +
                std::to_string(index_dim));
}

// FAISS gives NaN distances or a silently broken graph for non-finite input; name the culprit instead.
void check_finite(const char* op, const char* name, const float* x, int64_t n, int64_t d) {
  const int64_t count = n * d;
  for (int64_t i = 0; i < count; ++i) {
    if (std::isfinite(x[i])) continue;
    const char* what = std::isnan(x[i]) ? "NaN" : (x[i] > 0 ? "Infinity" : "-Infinity");
    throw_range(std::string(op) + ": " + name + " hold " + what + " at vector " + std::to_string(i / d) + ", component " +
                std::to_string(i % d));
  }
}

int64_t stored_bytes(const faiss::Index& index) {
  int64_t bytes = index.ntotal * index.d * static_cast<int64_t>(sizeof(float));
  if (const auto* hnsw = dynamic_cast<const faiss::IndexHNSW*>(&index))
    bytes += static_cast<int64_t>(hnsw->hnsw.neighbors.size() * sizeof(faiss::HNSW::storage_idx_t));
  return bytes;
}

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<FILE, FileCloser>;

std::string directory_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// For points [begin, end): out[t * n + i] = min(nearest[i], |x_i - x_candidate[t]|^2), and sums[t]
// their sum.
void distances_to_candidates(const float* x, int64_t n, int64_t d, int64_t begin, int64_t end,
                             const int64_t* candidates, int64_t tried, const float* nearest, float* out,
                             double* sums) {
  std::fill(sums, sums + tried, 0.0);
  for (int64_t i = begin; i < end; ++i) {
    const float* p = x + i * d;
    for (int64_t t = 0; t < tried; ++t) {
      const float* q = x + candidates[t] * d;
      float s = 0;
      // Lets the compiler split the sum over SIMD lanes: a fixed order per build, so still deterministic.
#pragma omp simd reduction(+ : s)
      for (int64_t j = 0; j < d; ++j) s += (p[j] - q[j]) * (p[j] - q[j]);
      out[t * n + i] = std::min(nearest[i], s);
      sums[t] += out[t * n + i];
    }
  }
}

// Greedy k-means++ seeding (Arthur and Vassilvitskii 2007; scikit-learn's default): each next
// centroid is the best of 2 + ln(k) points drawn with probability proportional to their squared
// distance to the nearest centroid so far. FAISS's own start, k random points, puts two centroids
// in one of four well-separated blobs for about a quarter of seeds, and plain k-means++ for 2%;
// Lloyd's iterations never recover from that.
std::vector<float> kmeans_plus_plus(const float* x, int64_t n, int64_t d, int64_t k, int64_t seed) {
  std::mt19937_64 gen(static_cast<uint64_t>(seed));
  const int64_t trials = 2 + static_cast<int64_t>(std::log(static_cast<double>(k)));
  std::vector<float> centroids(static_cast<size_t>(k * d));
  std::vector<float> nearest(static_cast<size_t>(n), std::numeric_limits<float>::infinity());
  std::vector<float> candidate_distances(static_cast<size_t>(trials * n));
  std::vector<double> cumulative(static_cast<size_t>(n));
  std::vector<int64_t> candidates{std::uniform_int_distribution<int64_t>(0, n - 1)(gen)};
  // Sums are taken per fixed chunk, then chunk by chunk: the same whatever the thread count.
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(chunks * trials));
  for (int64_t c = 0; c < k; ++c) {
    const auto tried = static_cast<int64_t>(candidates.size());
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < chunks; ++b)
      distances_to_candidates(x, n, d, b * kChunk, std::min(n, (b + 1) * kChunk), candidates.data(), tried,
                              nearest.data(), candidate_distances.data(), partial.data() + b * trials);
    int64_t best = 0;
    double best_potential = std::numeric_limits<double>::infinity();
    for (int64_t t = 0; t < tried; ++t) {
      double potential = 0;
      for (int64_t b = 0; b < chunks; ++b) potential += partial[b * trials + t];
      if (potential < best_potential) {
        best = t;
        best_potential = potential;
      }
    }
    std::copy(x + candidates[best] * d, x + (candidates[best] + 1) * d, centroids.begin() + c * d);
    if (c + 1 == k) break;
    std::copy(candidate_distances.begin() + best * n, candidate_distances.begin() + (best + 1) * n, nearest.begin());
    double total = 0;
    for (int64_t i = 0; i < n; ++i) cumulative[i] = total += nearest[i];
    candidates.clear();
    for (int64_t t = 0; t < trials; ++t) {
      if (!(total > 0)) {  // every point sits on a centroid: any point will do
        candidates.push_back(std::uniform_int_distribution<int64_t>(0, n - 1)(gen));
        continue;
      }
      const double target = std::uniform_real_distribution<double>(0, total)(gen);
      const auto it = std::upper_bound(cumulative.begin(), cumulative.end(), target);
      candidates.push_back(std::min<int64_t>(it - cumulative.begin(), n - 1));
    }
  }
  return centroids;
}

}  // namespace

int64_t vector_rows(const char* op, const char* name, size_t length, int64_t dim) {
  if (dim < 1) throw_range(std::string(op) + ": dim must be >= 1, got " + std::to_string(dim));
  if (length % static_cast<size_t>(dim) != 0)
    throw_range(std::string(op) + ": " + name + " has " + std::to_string(length) +
                " elements, which is not a multiple of the dimension " + std::to_string(dim));
  return static_cast<int64_t>(length / static_cast<size_t>(dim));
}

FaissIndex::FaissIndex(std::unique_ptr<faiss::Index> index, std::string kind, std::string metric)
    : index_(std::move(index)), kind_(std::move(kind)), metric_(std::move(metric)), dim_(index_->d) {
  ntotal_ = index_->ntotal;
  bytes_ = stored_bytes(*index_);
}

FaissIndex::~FaissIndex() = default;

std::unique_ptr<FaissIndex> FaissIndex::create(const std::string& kind, int64_t dim, const std::string& metric,
                                               int64_t hnsw_m) {
  const char* op = "Index.create";
  check_dim(op, "dim", dim);
  std::unique_ptr<faiss::Index> index;
  if (kind == "flat-ip" || kind == "flat-l2") {
    const std::string implied = kind == "flat-ip" ? "ip" : "l2";
    if (!metric.empty() && metric != implied)
      throw_range(std::string(op) + ": kind '" + kind + "' searches by metric '" + implied + "', got metric '" + metric +
                  "'");
    if (kind == "flat-ip")
      index = std::make_unique<faiss::IndexFlatIP>(dim);
    else
      index = std::make_unique<faiss::IndexFlatL2>(dim);
    return std::unique_ptr<FaissIndex>(new FaissIndex(std::move(index), kind, implied));
  }
  if (kind != "hnsw")
    throw_type(std::string(op) + ": unknown kind '" + kind + "'; expected 'flat-ip', 'flat-l2' or 'hnsw'");
  const std::string m = metric.empty() ? "l2" : metric;
  if (m != "ip" && m != "l2") throw_type(std::string(op) + ": unknown metric '" + m + "'; expected 'ip' or 'l2'");
  // M = 1 makes HNSW's level distribution divide by log(1) = 0; past 256 it only costs memory.
  if (hnsw_m < 2 || hnsw_m > 256)
    throw_range(std::string(op) + ": hnswM must be an integer from 2 to 256, got " + std::to_string(hnsw_m));
  faiss_call(op, [&] {
    index = std::make_unique<faiss::IndexHNSWFlat>(static_cast<int>(dim), static_cast<int>(hnsw_m),
                                                   m == "ip" ? faiss::METRIC_INNER_PRODUCT : faiss::METRIC_L2);
  });
  return std::unique_ptr<FaissIndex>(new FaissIndex(std::move(index), kind, m));
}

std::unique_ptr<FaissIndex> FaissIndex::load(const std::string& path) {
  const std::string op = "Index.load";
  if (path.empty()) throw_range(op + ": path is empty");
  File file(std::fopen(path.c_str(), "rb"));
  if (!file) throw_generic(op + ": cannot open '" + path + "': " + errno_text(errno));
  std::unique_ptr<faiss::Index> index;
  try {
    index.reset(faiss::read_index(file.get()));
  } catch (const faiss::FaissException& e) {
    throw_generic(op + ": '" + path + "' is not a readable FAISS index: " + e.what());
  }
  const auto metric = index->metric_type;
  const bool ip = metric == faiss::METRIC_INNER_PRODUCT;
  if (metric == faiss::METRIC_INNER_PRODUCT || metric == faiss::METRIC_L2) {
    if (dynamic_cast<faiss::IndexHNSWFlat*>(index.get()))
      return std::unique_ptr<FaissIndex>(new FaissIndex(std::move(index), "hnsw", ip ? "ip" : "l2"));
    if (dynamic_cast<faiss::IndexFlat*>(index.get()))
      return std::unique_ptr<FaissIndex>(new FaissIndex(std::move(index), ip ? "flat-ip" : "flat-l2", ip ? "ip" : "l2"));
  }
  throw_type(op + ": '" + path + "' holds a FAISS index this package does not use (only flat-ip, flat-l2 and hnsw)");
}

void FaissIndex::add(int64_t n, int64_t dim, const float* vectors) {
  const char* op = "Index.add";
  check_same_dim(op, "vectors", dim, dim_);
  if (n < 0) throw_range(std::string(op) + ": n must be >= 0, got " + std::to_string(n));
  check_finite(op, "vectors", vectors, n, dim);
  if (n == 0) return;
  std::unique_lock lock(mutex_);
  // HNSW and FAISS's int storage ids cap an index at INT_MAX vectors.
  if (index_->ntotal + n > kMaxInt)
    throw_range(std::string(op) + ": " + std::to_string(n) + " more vectors would exceed the " + std::to_string(kMaxInt) +
                " an index holds (it has " + std::to_string(index_->ntotal) + ")");
  faiss_call(op, [&] { index_->add(n, vectors); });
  ntotal_ = index_->ntotal;
  bytes_ = stored_bytes(*index_);
}

void FaissIndex::search(int64_t n, int64_t dim, const float* queries, int64_t k, float* distances,
                        int64_t* labels) const {
  const char* op = "Index.search";
  check_same_dim(op, "queries", dim, dim_);
  if (n < 0) throw_range(std::string(op) + ": n must be >= 0, got " + std::to_string(n));
  if (k < 1) throw_range(std::string(op) + ": k must be >= 1, got " + std::to_string(k));
  check_finite(op, "queries", queries, n, dim);
  if (n == 0) return;
  const float worst = metric_ == "ip" ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::infinity();
  std::shared_lock lock(mutex_);
  if (index_->ntotal == 0) {
    // FAISS's HNSW has no entry point to start from: answer as FAISS's flat search would.
    std::fill(labels, labels + n * k, int64_t{-1});
    std::fill(distances, distances + n * k, worst);
    return;
  }
  faiss_call(op, [&] { index_->search(n, queries, k, distances, labels); });
  // FAISS pads with +-FLT_MAX or +-inf depending on the index; make the padding one value.
  for (int64_t i = 0; i < n * k; ++i)
    if (labels[i] < 0) distances[i] = worst;
}

void FaissIndex::reset() {
  std::unique_lock lock(mutex_);
  faiss_call("Index.reset", [&] { index_->reset(); });
  ntotal_ = 0;
  bytes_ = stored_bytes(*index_);
}

void FaissIndex::save(const std::string& path) const {
  const std::string op = "Index.save";
  if (path.empty()) throw_range(op + ": path is empty");
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) throw_generic(op + ": cannot create '" + tmp + "': " + errno_text(errno));
  File file(::fdopen(fd, "wb"));
  if (!file) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    throw_generic(op + ": cannot write '" + tmp + "': " + errno_text(err));
  }
  const auto fail = [&](const std::string& what, int err) {
    file.reset();
    ::unlink(tmp.c_str());
    throw_generic(op + ": " + what + ": " + errno_text(err));
  };
  try {
    std::shared_lock lock(mutex_);
    faiss::write_index(index_.get(), file.get());
  } catch (const faiss::FaissException& e) {
    file.reset();
    ::unlink(tmp.c_str());
    throw_generic(op + ": writing '" + tmp + "' failed: " + e.what());
  } catch (...) {
    file.reset();
    ::unlink(tmp.c_str());
    throw;
  }
  if (std::fflush(file.get()) != 0 || ::fsync(::fileno(file.get())) != 0) fail("writing '" + tmp + "' failed", errno);
  if (std::fclose(file.release()) != 0) fail("closing '" + tmp + "' failed", errno);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("renaming '" + tmp + "' to '" + path + "' failed", errno);
  // The rename is durable once the directory entry is; the file itself is complete either way.
  const int dir = ::open(directory_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

int64_t FaissIndex::ntotal() const { return ntotal_; }
int64_t FaissIndex::memory_bytes() const { return bytes_; }

int64_t FaissIndex::ef_search() const {
  const auto* hnsw = dynamic_cast<const faiss::IndexHNSW*>(index_.get());
  if (!hnsw) return 0;
  std::shared_lock lock(mutex_);
  return hnsw->hnsw.efSearch;
}

void FaissIndex::set_ef_search(int64_t ef) {
  auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(index_.get());
  if (!hnsw) throw_type("Index.efSearch: only hnsw indexes have efSearch; this one is " + kind_);
  if (ef < 1 || ef > kMaxInt)
    throw_range("Index.efSearch: must be an integer from 1 to " + std::to_string(kMaxInt) + ", got " + std::to_string(ef));
  std::unique_lock lock(mutex_);
  hnsw->hnsw.efSearch = static_cast<int>(ef);
}

double kmeans(const float* data, int64_t n, int64_t d, int64_t k, const KMeansOptions& options, float* centroids,
              int32_t* assignments) {
  const char* op = "kmeans";
  check_dim(op, "dim", d);
  if (k < 1 || k > kMaxInt)
    throw_range(std::string(op) + ": k must be an integer from 1 to " + std::to_string(kMaxInt) + ", got " +
                std::to_string(k));
  if (n < k)
    throw_range(std::string(op) + ": k=" + std::to_string(k) + " clusters need at least " + std::to_string(k) +
                " points, got " + std::to_string(n));
  if (options.iterations < 1 || options.iterations > kMaxInt)
    throw_range(std::string(op) + ": iterations must be an integer from 1 to " + std::to_string(kMaxInt) + ", got " +
                std::to_string(options.iterations));
  if (options.seed < 0 || options.seed > kMaxInt)
    throw_range(std::string(op) + ": seed must be an integer from 0 to " + std::to_string(kMaxInt) + ", got " +
                std::to_string(options.seed));
  check_finite(op, "data", data, n, d);

  faiss::ClusteringParameters cp;
  cp.niter = static_cast<int>(options.iterations);
  cp.seed = static_cast<int>(options.seed);
  cp.spherical = options.spherical;
  // We checked n >= k ourselves; FAISS would print a warning below 39 points per cluster and
  // silently train on a sample above 256.
  cp.min_points_per_centroid = 1;
  cp.max_points_per_centroid = INT_MAX;
  std::unique_ptr<faiss::IndexFlat> index;
  if (options.spherical)
    index = std::make_unique<faiss::IndexFlatIP>(d);
  else
    index = std::make_unique<faiss::IndexFlatL2>(d);
  faiss::Clustering clustering(static_cast<int>(d), static_cast<int>(k), cp);
  clustering.centroids = kmeans_plus_plus(data, n, d, k, options.seed);  // FAISS starts from these
  std::vector<float> distances(static_cast<size_t>(n));
  std::vector<int64_t> labels(static_cast<size_t>(n));
  faiss_call(op, [&] {
    clustering.train(n, data, *index);
    // Assign every point to the final centroids (FAISS's last iteration assigned to the previous ones).
    index->reset();
    index->add(k, clustering.centroids.data());
    index->search(n, data, 1, distances.data(), labels.data());
  });
  std::copy(clustering.centroids.begin(), clustering.centroids.end(), centroids);
  // The objective in double from the points themselves: BLAS's float distances (|x|^2 + |c|^2 - 2xc)
  // change in the last bits with the data's alignment and the thread count.
  double objective = 0;
  for (int64_t i = 0; i < n; ++i) {
    assignments[i] = static_cast<int32_t>(labels[static_cast<size_t>(i)]);
    const float* x = data + i * d;
    const float* c = centroids + labels[static_cast<size_t>(i)] * d;
    for (int64_t j = 0; j < d; ++j)
      objective += options.spherical ? double(x[j]) * c[j] : (double(x[j]) - c[j]) * (double(x[j]) - c[j]);
  }
  return objective;
}

}  // namespace jfa
