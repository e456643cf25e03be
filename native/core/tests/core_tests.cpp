// native/core tests: plain C++, no Node. Each CHECK can fail; the process exits non-zero if any did.
#include <ATen/TensorOperators.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/where.h>
#include <torch/csrc/autograd/autograd.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/tensor.h>

#include <algorithm>
#include <array>
#include <limits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <thread>
#include <random>
#include <string>
#include <vector>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/distributed.h"
#include "core/decode_attention.h"
#include "core/divergence.h"
#include "core/faiss_index.h"
#include "core/fused.h"
#include "core/head_loss.h"
#include "core/skinny.h"
#include "core/json.h"
#include "core/llama.h"
#include "core/lora.h"
#include "core/optim.h"
#include "core/ops.h"
#include "core/projection.h"
#include "core/runtime.h"
#include "core/safetensors.h"
#include "core/safetensors_header.h"

namespace {

int g_failed = 0;
int g_passed = 0;

void check(bool ok, const char* expr, const char* file, int line) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    std::fprintf(stderr, "FAIL %s:%d: %s\n", file, line, expr);
  }
}
#define EXPECT(expr) check(static_cast<bool>(expr), #expr, __FILE__, __LINE__)

// Runs fn and checks that it throws jfa::Error of `kind` whose message contains `needle`.
void check_throws(const std::function<void()>& fn, jfa::ErrorKind kind, const std::string& needle, int line) {
  try {
    fn();
    check(false, ("expected an error containing: " + needle).c_str(), __FILE__, line);
  } catch (const jfa::Error& e) {
    const bool ok = e.kind() == kind && std::string(e.what()).find(needle) != std::string::npos;
    if (!ok) std::fprintf(stderr, "  got: %s\n", e.what());
    check(ok, ("error containing: " + needle).c_str(), __FILE__, line);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "  got a foreign exception: %s\n", e.what());
    check(false, ("jfa::Error containing: " + needle).c_str(), __FILE__, line);
  }
}
#define EXPECT_THROWS(fn, kind, needle) check_throws([&] { fn; }, jfa::ErrorKind::kind, needle, __LINE__)

void test_matmul() {
  const float a[] = {1, 2, 3, 4, 5, 6};  // 2x3
  const float b[] = {1, 0, 0, 1, 1, 1};  // 3x2
  auto ta = jfa::copy_from(a, sizeof a, {2, 3}, c10::kFloat, "t");
  auto tb = jfa::copy_from(b, sizeof b, {3, 2}, c10::kFloat, "t");
  auto c = jfa::matmul(ta, tb);
  auto expected = at::tensor({4.f, 5.f, 10.f, 11.f}).reshape({2, 2});
  EXPECT(at::equal(c, expected));
  EXPECT_THROWS(jfa::matmul(ta, ta), Range, "shapes [2, 3] and [2, 3] cannot be multiplied");
  auto ti = jfa::zeros({3, 2}, c10::kInt);
  EXPECT_THROWS(jfa::matmul(ta, ti), Type, "b must be a floating-point tensor, got int32");
  EXPECT_THROWS(jfa::matmul(ta, jfa::zeros({3, 2}, c10::kDouble)), Type, "b is float64 but a is float32");
}

void test_add_sum() {
  auto x = jfa::randn({2, 3}, c10::kFloat, 7);
  auto y = jfa::randn({3}, c10::kFloat, 8);
  auto z = jfa::add(x, y, 2.0);
  EXPECT(at::allclose(z.sub(x), y.mul(2.0).expand_as(x)));
  EXPECT_THROWS(jfa::add(x, jfa::zeros({4}, c10::kFloat), 1.0), Range, "[2, 3] and [4] cannot be broadcast");
  auto s = jfa::sum(x, {1}, false);
  EXPECT(s.sizes() == c10::IntArrayRef({2}));
  EXPECT(at::allclose(jfa::sum(x, {}, false), x.sum()));
  EXPECT_THROWS(jfa::sum(x, {2}, false), Range, "dim 2 is out of range");
  EXPECT_THROWS(jfa::sum(x, {1, -1}, false), Range, "listed twice");
}

void test_factories() {
  auto r1 = jfa::randn({4, 5}, c10::kFloat, 42);
  auto r2 = jfa::randn({4, 5}, c10::kFloat, 42);
  auto r3 = jfa::randn({4, 5}, c10::kFloat, 43);
  EXPECT(at::equal(r1, r2));
  EXPECT(!at::equal(r1, r3));
  EXPECT_THROWS(jfa::randn({2}, c10::kInt, 1), Type, "dtype must be floating-point");
  EXPECT_THROWS(jfa::zeros({2, -1}, c10::kFloat), Range, "negative dimension");
  const int32_t data[] = {1, 2, 3};
  EXPECT_THROWS(jfa::copy_from(data, sizeof data, {2, 2}, c10::kInt, "tensor"), Range,
               "holds 4 elements but the data has 3");
  EXPECT(jfa::parse_dtype("bfloat16", "to") == c10::kBFloat16);
  EXPECT_THROWS(jfa::parse_dtype("float8", "to"), Type, "unknown dtype 'float8'");
  EXPECT(jfa::dtype_name(jfa::cast(r1, c10::kBFloat16).scalar_type()) == "bfloat16");
}

void test_runtime() {
  auto info = jfa::runtime_info();
  EXPECT(!info.torch_version.empty() && info.torch_version[0] == '2');
  EXPECT(info.num_threads >= 1);
  const std::string faiss = jfa::faiss_self_check();
  if (!faiss.empty()) std::fprintf(stderr, "  faiss: %s\n", faiss.c_str());
  EXPECT(faiss.empty());
}

std::vector<float> gaussian(size_t count, unsigned seed, float scale = 1) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0, scale);
  std::vector<float> out(count);
  for (auto& x : out) x = normal(gen);
  return out;
}

// Exact nearest neighbours: flat indexes agree with a brute force in double precision.
void test_faiss_flat() {
  const int64_t n = 200, d = 8, nq = 30, k = 5;
  const auto base = gaussian(n * d, 1), queries = gaussian(nq * d, 2);
  for (const std::string kind : {"flat-l2", "flat-ip"}) {
    auto index = jfa::FaissIndex::create(kind, d, "", 0);
    index->add(n, d, base.data());
    EXPECT(index->ntotal() == n);
    EXPECT(index->memory_bytes() == n * d * 4);
    std::vector<float> distances(nq * k);
    std::vector<int64_t> labels(nq * k);
    index->search(nq, d, queries.data(), k, distances.data(), labels.data());
    int mismatches = 0;
    for (int64_t q = 0; q < nq; ++q) {
      std::vector<std::pair<double, int64_t>> scored;
      for (int64_t i = 0; i < n; ++i) {
        double s = 0;
        for (int64_t j = 0; j < d; ++j) {
          const double a = queries[q * d + j], b = base[i * d + j];
          s += kind == "flat-l2" ? (a - b) * (a - b) : -a * b;  // ascending is best first for both
        }
        scored.emplace_back(s, i);
      }
      std::sort(scored.begin(), scored.end());
      for (int64_t j = 0; j < k; ++j) {
        mismatches += labels[q * k + j] != scored[j].second;
        const double expected = kind == "flat-l2" ? scored[j].first : -scored[j].first;
        EXPECT(std::fabs(distances[q * k + j] - expected) < 1e-3);
      }
    }
    EXPECT(mismatches == 0);
  }
}

void test_faiss_padding_and_errors() {
  auto index = jfa::FaissIndex::create("hnsw", 4, "ip", 16);
  const float q[] = {1, 0, 0, 0};
  float distances[3];
  int64_t labels[3];
  index->search(1, 4, q, 3, distances, labels);  // empty: all padding
  EXPECT(labels[0] == -1 && labels[2] == -1 && std::isinf(distances[0]) && distances[0] < 0);
  const float two[] = {1, 0, 0, 0, 0, 1, 0, 0};
  index->add(2, 4, two);
  index->search(1, 4, q, 3, distances, labels);
  EXPECT(labels[0] == 0 && distances[0] == 1.f && labels[1] == 1 && labels[2] == -1);
  EXPECT(index->ef_search() == 16);
  index->reset();
  EXPECT(index->ntotal() == 0);

  EXPECT_THROWS(jfa::FaissIndex::create("ivf", 4, "", 0), Type, "Index.create: unknown kind 'ivf'");
  EXPECT_THROWS(jfa::FaissIndex::create("flat-ip", 0, "", 0), Range, "Index.create: dim must be an integer from 1");
  EXPECT_THROWS(jfa::FaissIndex::create("flat-ip", 4, "l2", 0), Range, "kind 'flat-ip' searches by metric 'ip', got metric 'l2'");
  EXPECT_THROWS(jfa::FaissIndex::create("hnsw", 4, "cosine", 32), Type, "unknown metric 'cosine'");
  EXPECT_THROWS(jfa::FaissIndex::create("hnsw", 4, "l2", 1), Range, "hnswM must be an integer from 2 to 256, got 1");
  auto flat = jfa::FaissIndex::create("flat-l2", 4, "", 0);
  const float five[5] = {};
  EXPECT_THROWS(flat->add(1, 5, five), Range, "Index.add: vectors have dimension 5 but the index has dimension 4");
  EXPECT_THROWS(flat->search(1, 4, q, 0, distances, labels), Range, "Index.search: k must be >= 1, got 0");
  const float nan[] = {0, 1, std::nanf(""), 0};
  EXPECT_THROWS(flat->add(1, 4, nan), Range, "Index.add: vectors hold NaN at vector 0, component 2");
  EXPECT_THROWS(jfa::vector_rows("Index.add", "vectors", 10, 4), Range, "vectors has 10 elements, which is not a multiple of the dimension 4");
  EXPECT_THROWS(flat->set_ef_search(8), Type, "only hnsw indexes have efSearch; this one is flat-l2");
  EXPECT_THROWS(jfa::FaissIndex::load("/nonexistent/x.faiss"), Generic, "Index.load: cannot open '/nonexistent/x.faiss': No such file");
}

std::string temp_dir() {
  char tmpl[] = "/tmp/jfa-core-XXXXXX";
  const char* dir = mkdtemp(tmpl);
  return dir ? dir : "/tmp";
}

void test_faiss_save_load() {
  const std::string dir = temp_dir();
  const auto base = gaussian(300 * 16, 3), queries = gaussian(10 * 16, 4);
  auto index = jfa::FaissIndex::create("hnsw", 16, "l2", 8);
  index->add(300, 16, base.data());
  index->set_ef_search(40);
  index->save(dir + "/a.faiss");
  auto loaded = jfa::FaissIndex::load(dir + "/a.faiss");
  EXPECT(loaded->kind() == "hnsw" && loaded->metric() == "l2" && loaded->dim() == 16 && loaded->ntotal() == 300);
  EXPECT(loaded->ef_search() == 40);
  std::vector<float> d1(50), d2(50);
  std::vector<int64_t> l1(50), l2(50);
  index->search(10, 16, queries.data(), 5, d1.data(), l1.data());
  loaded->search(10, 16, queries.data(), 5, d2.data(), l2.data());
  EXPECT(d1 == d2 && l1 == l2);
  EXPECT_THROWS(index->save(dir + "/missing/a.faiss"), Generic, "Index.save: cannot create");
  {
    FILE* f = std::fopen((dir + "/junk").c_str(), "wb");
    std::fputs("not an index", f);
    std::fclose(f);
  }
  EXPECT_THROWS(jfa::FaissIndex::load(dir + "/junk"), Generic, "is not a readable FAISS index");
  std::filesystem::remove_all(dir);
}

// Four blobs far apart: every blob lands in one cluster of its own, the same way under one seed.
void test_kmeans() {
  const int64_t per = 50, d = 3, k = 4;
  const float centers[4][3] = {{10, 0, 0}, {0, 10, 0}, {0, 0, 10}, {-10, -10, -10}};
  const auto noise = gaussian(4 * per * d, 5, 0.5f);
  std::vector<float> data(noise.size());
  for (int64_t i = 0; i < 4 * per; ++i)
    for (int64_t j = 0; j < d; ++j) data[i * d + j] = centers[i / per][j] + noise[i * d + j];
  std::vector<float> centroids(k * d), centroids2(k * d);
  std::vector<int32_t> assign(4 * per), assign2(4 * per);
  const double objective = jfa::kmeans(data.data(), 4 * per, d, k, {}, centroids.data(), assign.data());
  bool blobs_kept = true;
  std::vector<int32_t> seen;
  for (int64_t b = 0; b < 4; ++b) {
    for (int64_t i = 0; i < per; ++i) blobs_kept &= assign[b * per + i] == assign[b * per];
    seen.push_back(assign[b * per]);
  }
  std::sort(seen.begin(), seen.end());
  EXPECT(blobs_kept);
  EXPECT(std::unique(seen.begin(), seen.end()) == seen.end());
  EXPECT(objective > 0 && objective < 4 * per * d * 0.25 * 2);  // about n*d*sigma^2
  const double again = jfa::kmeans(data.data(), 4 * per, d, k, {}, centroids2.data(), assign2.data());
  EXPECT(again == objective && centroids == centroids2 && assign == assign2);
  EXPECT_THROWS(jfa::kmeans(data.data(), 3, d, 10, {}, centroids.data(), assign.data()), Range,
                "kmeans: k=10 clusters need at least 10 points, got 3");
  EXPECT_THROWS(jfa::kmeans(data.data(), 4 * per, d, 4, {0, 1, false}, centroids.data(), assign.data()), Range,
                "kmeans: iterations must be an integer from 1");
}

// The kernels' maths without Node: PCGrad on two opposed gradients, the divergence of a
// distribution with itself, and a LoRA shape error. (test/09 checks them all against PyTorch.)
void test_kernels() {
  const float up[] = {1, 0}, down[] = {-1, 1};
  auto g1 = jfa::copy_from(up, sizeof up, {2}, c10::kFloat, "t");
  auto g2 = jfa::copy_from(down, sizeof down, {2}, c10::kFloat, "t");
  const auto r = jfa::pcgrad({{g1}, {g2}}, {{1}, {0}});
  EXPECT(r.conflicts == 2);
  // g1' = g1 - (g1.g2/|g2|^2) g2 = (0.5, 0.5); g2' = g2 - (g2.g1/|g1|^2) g1 = (0, 1); mean (0.25, 0.75)
  EXPECT(at::allclose(r.grads[0], at::tensor({0.25f, 0.75f})));
  EXPECT_THROWS(jfa::pcgrad({}, {}), Range, "the list of gradients is empty");
  // The GPU's Gram matrix (one product per parameter) against the CPU's blockwise dots.
  {
    jfa::GradientSet set;
    for (uint64_t i = 0; i < 4; ++i) set.push_back({jfa::randn({70000}, c10::kFloat, 10 + i), jfa::randn({3, 5}, c10::kFloat, 20 + i)});
    const auto blockwise = jfa::pcgrad_gram(set, false), batched = jfa::pcgrad_gram(set, true);
    double worst = 0;
    // Each entry's difference on the scale of its two norms (|g_i| |g_j|): float32 dots against double.
    for (size_t i = 0; i < 4; ++i)
      for (size_t j = 0; j < 4; ++j)
        worst = std::max(worst, std::abs(blockwise[i * 4 + j] - batched[i * 4 + j]) / std::sqrt(blockwise[i * 5] * blockwise[j * 5]));
    std::printf("  pcgrad gram: batched vs blockwise, worst relative difference %.3g\n", worst);
    EXPECT(blockwise.size() == 16 && worst < 1e-6);
    EXPECT(blockwise[5] > 60000 && blockwise[5] < 80000);  // |g_1|^2 ~ 70000
  }

  // AdamW's multi-tensor path (the GPU's) gives the per-parameter loop's bits, over 3 steps, with a
  // parameter that misses a gradient in step 2 (so the counts, and the groups, differ).
  {
    auto make = [] {
      std::vector<at::Tensor> p;
      for (uint64_t i = 0; i < 3; ++i) p.push_back(jfa::randn({5, 7}, c10::kFloat, 40 + i));
      return p;
    };
    std::vector<at::Tensor> P[2] = {make(), make()}, M[2], V[2];
    at::Tensor steps[2] = {at::zeros({3}, at::kLong), at::zeros({3}, at::kLong)};
    for (int s = 0; s < 2; ++s)
      for (auto& p : P[s]) {
        M[s].push_back(at::zeros_like(p));
        V[s].push_back(at::zeros_like(p));
      }
    jfa::AdamWOptions o;
    o.lr = 0.01;
    o.weight_decay = 0.1;
    for (int step = 0; step < 3; ++step)
      for (int s = 0; s < 2; ++s) {
        for (size_t i = 0; i < 3; ++i)
          P[s][i].mutable_grad() = step == 1 && i == 2 ? at::Tensor() : jfa::randn({5, 7}, c10::kFloat, 100 + step * 10 + i);
        jfa::adamw_step(P[s], M[s], V[s], steps[s], o, s == 1);
      }
    bool same = at::equal(steps[0], steps[1]) && steps[0][2].item<int64_t>() == 2;
    for (size_t i = 0; i < 3; ++i) same = same && at::equal(P[0][i], P[1][i]) && at::equal(M[0][i], M[1][i]) && at::equal(V[0][i], V[1][i]);
    EXPECT(same);
  }

  jfa::DivergenceArgs d;
  d.cur = jfa::randn({2, 3, 17}, c10::kFloat, 5);
  d.ref = d.cur.clone();
  d.mask = jfa::zeros({2, 3}, c10::kFloat).fill_(1);
  EXPECT(std::abs(jfa::flashback_divergence(d).item<double>()) < 1e-6);

  jfa::LoraArgs l;
  l.x = jfa::randn({4, 8}, c10::kFloat, 1);
  l.W = jfa::randn({6, 8}, c10::kFloat, 2);
  l.A = jfa::randn({2, 7}, c10::kFloat, 3);
  l.B = jfa::randn({6, 2}, c10::kFloat, 4);
  EXPECT_THROWS(jfa::lora_linear(l), Range, "A [2, 7] must be (r, 8)");
}

}  // namespace

// Our causal attention against the same attention in float64 by plain ops, output and gradients,
// with and without right padding, a length that is not a multiple of the block, the model's layout.
void test_causal_attention() {
  const int64_t b = 2, heads = 3, t = 150, hd = 16;
  const double scale = 0.25;
  // q in (b, t, heads, hd) memory seen as (b, heads, t, hd), as the model makes it.
  auto leaf = [&](uint64_t seed) {
    return jfa::randn({b, t, heads, hd}, c10::kFloat, seed).transpose(1, 2).detach().requires_grad_(true);
  };
  const at::Tensor q = leaf(1), k = leaf(2), v = leaf(3);
  const at::Tensor w = jfa::randn({b, heads, t, hd}, c10::kFloat, 4);
  at::Tensor mask = at::ones({b, t}, at::TensorOptions().dtype(at::kLong));
  mask[1].narrow(0, 97, t - 97).fill_(0);
  for (const bool padded : {false, true}) {
    const at::Tensor key_mask = padded ? mask : at::Tensor();
    EXPECT(jfa::causal_attention_applies(b, heads, t, q.options(), key_mask));
    const at::Tensor out = jfa::causal_attention(q, k, v, key_mask, scale);
    const auto grads = torch::autograd::grad({(out * w).sum()}, {q, k, v});
    // float64 reference: additive mask, softmax, weighted sum
    const at::Tensor qd = q.detach().to(at::kDouble).requires_grad_(true), kd = k.detach().to(at::kDouble).requires_grad_(true),
                     vd = v.detach().to(at::kDouble).requires_grad_(true);
    at::Tensor keep = at::ones({t, t}, at::TensorOptions().dtype(at::kBool)).tril().view({1, 1, t, t});
    if (padded) keep = keep.logical_and(mask.ne(0).view({b, 1, 1, t}));
    const at::Tensor scores = at::where(keep, at::matmul(qd, kd.transpose(-1, -2)) * scale, -std::numeric_limits<double>::infinity());
    const at::Tensor ref = at::matmul(at::softmax(scores, -1), vd);
    const auto ref_grads = torch::autograd::grad({(ref * w.to(at::kDouble)).sum()}, {qd, kd, vd});
    const auto err = [](const at::Tensor& a, const at::Tensor& r) { return (a.to(at::kDouble) - r).abs().max().template item<double>(); };
    // Only real query rows: a padded query's output is whatever its visible keys give, in both.
    const at::Tensor rows = padded ? mask.ne(0).view({b, 1, t, 1}).to(at::kDouble) : at::ones({}, at::kDouble);
    const double e_out = err(out * rows, ref.detach() * rows);
    double e_grad = 0.0;
    for (int i = 0; i < 3; ++i) e_grad = std::max(e_grad, err(grads[i], ref_grads[i]));
    // SDPA's error against the same float64 reference, for scale
    const at::Tensor sdpa = at::scaled_dot_product_attention(q.detach(), k.detach(), v.detach(),
                                                             at::where(keep, 0.0f, -std::numeric_limits<float>::infinity()),
                                                             0.0, false, scale);
    const double e_sdpa = err(sdpa * rows, ref.detach() * rows);
    std::printf("  causal attention (%s): max error output %.2e (SDPA %.2e), gradients %.2e\n", padded ? "padded" : "full", e_out,
                e_sdpa, e_grad);
    EXPECT(e_out < 5e-6);
    EXPECT(e_grad < 5e-5);
    EXPECT(out.transpose(1, 2).is_contiguous());
  }
  // A sample whose key 0 is padding (left padding) has queries that see no key: not ours.
  at::Tensor left = at::ones({b, t}, at::TensorOptions().dtype(at::kLong));
  left[0][0] = 0;
  EXPECT(!jfa::causal_attention_applies(b, heads, t, q.options(), left));
  EXPECT(!jfa::causal_attention_applies(b, heads, t, q.options().dtype(at::kDouble), at::Tensor()));
}

// The fused RMSNorm and rotary embedding against the same layers by plain ops: values and every
// gradient (the norm's weight too, as pretraining trains it).
// The chunked head + loss against a float64 head, log-softmax and mean, with both gradients; the
// vocabulary is large enough for several chunks.
void test_head_cross_entropy() {
  const int64_t n = 37, H = 24, V = 300000;
  const at::Tensor h = jfa::randn({n, H}, c10::kFloat, 11).requires_grad_(true);
  const at::Tensor W = jfa::randn({V, H}, c10::kFloat, 12).mul_(0.1).requires_grad_(true);
  const at::Tensor targets = at::randint(V, {n}, at::TensorOptions().dtype(at::kLong));
  const at::Tensor loss = jfa::head_cross_entropy(h, W, targets);
  const auto grads = torch::autograd::grad({loss * 3.0}, {h, W});
  const at::Tensor hd = h.detach().to(at::kDouble).requires_grad_(true), Wd = W.detach().to(at::kDouble).requires_grad_(true);
  const at::Tensor ref = -at::matmul(hd, Wd.t()).log_softmax(1).gather(1, targets.unsqueeze(1)).mean();
  const auto ref_grads = torch::autograd::grad({ref * 3.0}, {hd, Wd});
  EXPECT(std::abs(loss.item<double>() - ref.item<double>()) < 1e-4);
  EXPECT(at::allclose(grads[0].to(at::kDouble), ref_grads[0], 1e-4, 1e-6));
  EXPECT(at::allclose(grads[1].to(at::kDouble), ref_grads[1], 1e-4, 1e-7));
  EXPECT_THROWS(jfa::head_cross_entropy(h, W, targets.narrow(0, 0, n - 1)), Range, "targets must be int64 of shape [37]");
  EXPECT_THROWS(jfa::head_cross_entropy(h, W, targets.fill_(V)), Range, "targets must be in [0, 300000)");
}

// The few-rows linear kernel against at::linear: row counts in and across its groups of 16, K with and without a
// tail of the 16-float vectors, N not a multiple of its row blocks, with and without bias.
void test_skinny_linear() {
  if (!jfa::skinny_applies(jfa::randn({1, 16}, c10::kFloat, 1), jfa::randn({4, 16}, c10::kFloat, 2))) {
    std::printf("  skinny linear: no AVX-512 here, at::linear is used\n");
    return;
  }
  double worst = 0;
  for (const int64_t K : {768, 100, 7}) {
    const at::Tensor W = jfa::randn({130, K}, c10::kFloat, 3), bias = jfa::randn({130}, c10::kFloat, 4);
    for (const int64_t m : {1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 33, 50, 64}) {
      const at::Tensor x = jfa::randn({m, 1, K}, c10::kFloat, 5 + m);
      EXPECT(jfa::skinny_applies(x, W));
      for (const bool with_bias : {false, true}) {
        const at::Tensor b = with_bias ? bias : at::Tensor();
        const at::Tensor got = jfa::skinny_linear(x, W, b);
        const at::Tensor want = at::linear(x, W, with_bias ? std::optional<at::Tensor>(bias) : std::nullopt);
        EXPECT(got.sizes() == want.sizes());
        worst = std::max(worst, (got - want).abs().max().item<double>());
      }
    }
  }
  EXPECT(worst < 1e-4);
  std::printf("  skinny linear: max difference from at::linear %.2e\n", worst);
  EXPECT(!jfa::skinny_applies(jfa::randn({65, 16}, c10::kFloat, 1), jfa::randn({4, 16}, c10::kFloat, 2)));
  EXPECT(!jfa::skinny_applies(jfa::randn({2, 16}, c10::kFloat, 1).to(at::kDouble), jfa::randn({4, 16}, c10::kFloat, 2)));
  EXPECT(!jfa::skinny_applies(jfa::randn({2, 16}, c10::kFloat, 1).requires_grad_(true), jfa::randn({4, 16}, c10::kFloat, 2)));
}

// The decoding step's attention against SDPA on expanded KV heads with an additive mask: grouped
// heads, head sizes of 1 to 8 vectors, padded keys (NaN behind them, which must not leak), a row that
// sees no key; and a row's result does not depend on the other rows or on its padding.
void test_decode_attention() {
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  if (!jfa::decode_attention_fits(8, 2, 64, f32)) {
    std::printf("  decode attention: no AVX-512 here, SDPA is used\n");
    return;
  }
  EXPECT(!jfa::decode_attention_fits(8, 3, 64, f32));
  EXPECT(!jfa::decode_attention_fits(8, 2, 40, f32));
  EXPECT(!jfa::decode_attention_fits(8, 2, 64, f32.dtype(at::kDouble)));
  const float lowest = std::numeric_limits<float>::lowest();
  double worst = 0;
  for (const auto& [heads, kvh, hd, total] : std::vector<std::array<int64_t, 4>>{{8, 8, 32, 1}, {8, 2, 64, 37}, {4, 1, 128, 130}, {6, 3, 16, 17}}) {
    const int64_t b = 3, cap = total + 5;
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    // q as the model makes it: (b, 1, heads, hd) memory seen as (b, heads, 1, hd); k, v a cache's first columns.
    const at::Tensor q = jfa::randn({b, 1, heads, hd}, c10::kFloat, 21).transpose(1, 2);
    const at::Tensor kc = jfa::randn({b, kvh, cap, hd}, c10::kFloat, 22), vc = jfa::randn({b, kvh, cap, hd}, c10::kFloat, 23);
    at::Tensor mask = at::ones({b, total}, at::TensorOptions().dtype(at::kByte));
    if (total > 3) {
      mask[1].narrow(0, 0, total / 2).fill_(0);  // left padding
      mask[2][total - 2] = 0;                     // a hole
      kc[1].narrow(1, 0, 1).fill_(std::numeric_limits<float>::quiet_NaN());
      vc[1].narrow(1, 0, 1).fill_(std::numeric_limits<float>::quiet_NaN());
    }
    const at::Tensor k = kc.narrow(2, 0, total), v = vc.narrow(2, 0, total);
    const at::Tensor got = jfa::decode_attention(q, k, v, mask, scale);
    EXPECT(got.sizes() == q.sizes());
    const at::Tensor ke = k.unsqueeze(2).expand({b, kvh, heads / kvh, total, hd}).reshape({b, heads, total, hd});
    const at::Tensor ve = v.unsqueeze(2).expand({b, kvh, heads / kvh, total, hd}).reshape({b, heads, total, hd});
    const at::Tensor keep = mask.ne(0).view({b, 1, 1, total});
    const at::Tensor want = at::scaled_dot_product_attention(q, at::where(keep.view({b, 1, total, 1}), ke, 0.0f),
                                                             at::where(keep.view({b, 1, total, 1}), ve, 0.0f),
                                                             at::where(keep, 0.0f, lowest), 0.0, false, scale);
    worst = std::max(worst, (got - want).abs().max().item<double>());
    // Row 0 alone, without any padding, gives the same bits as in the batch.
    const at::Tensor alone = jfa::decode_attention(q.narrow(0, 0, 1), k.narrow(0, 0, 1), v.narrow(0, 0, 1), at::Tensor(), scale);
    EXPECT(at::equal(alone, got.narrow(0, 0, 1)));
    // Row 1 with its padding cut off, alone: the same bits.
    const int64_t pad = total > 3 ? total / 2 : 0;
    const at::Tensor cut = jfa::decode_attention(q.narrow(0, 1, 1), k.narrow(0, 1, 1).narrow(2, pad, total - pad),
                                                 v.narrow(0, 1, 1).narrow(2, pad, total - pad), at::Tensor(), scale);
    EXPECT(at::equal(cut, got.narrow(0, 1, 1)));
  }
  EXPECT(worst < 2e-6);
  std::printf("  decode attention: max difference from SDPA %.2e\n", worst);
  // A row that sees no key: the mean of its values, as SDPA with the lowest finite value gives.
  const at::Tensor q = jfa::randn({1, 2, 1, 16}, c10::kFloat, 31), k = jfa::randn({1, 1, 5, 16}, c10::kFloat, 32),
                   v = jfa::randn({1, 1, 5, 16}, c10::kFloat, 33);
  const at::Tensor none = jfa::decode_attention(q, k, v, at::zeros({1, 5}, at::TensorOptions().dtype(at::kByte)), 0.25);
  EXPECT(at::allclose(none, v.mean(2, true).expand({1, 2, 1, 16}), 1e-5, 1e-6));
  EXPECT_THROWS(jfa::decode_attention(q, k, v, at::zeros({1, 4}, at::TensorOptions().dtype(at::kByte)), 0.25), Range, "key mask");
}

void test_fused_layers() {
  const auto err = [](const at::Tensor& a, const at::Tensor& r) { return (a - r).abs().max().template item<double>(); };
  const at::Tensor x = (jfa::randn({3, 5, 72}, c10::kFloat, 11) * 3).requires_grad_(true);
  const at::Tensor w = jfa::randn({72}, c10::kFloat, 12).requires_grad_(true);
  const at::Tensor g = jfa::randn({3, 5, 72}, c10::kFloat, 13);
  const at::Tensor y = jfa::fused_rms_norm(x, w, 1e-5);
  const auto grads = torch::autograd::grad({(y * g).sum()}, {x, w});
  const at::Tensor xd = x.detach().to(at::kDouble).requires_grad_(true), wd = w.detach().to(at::kDouble).requires_grad_(true);
  const at::Tensor ref = wd * (xd * (xd.pow(2).mean(-1, true) + 1e-5).rsqrt());
  const auto ref_grads = torch::autograd::grad({(ref * g.to(at::kDouble)).sum()}, {xd, wd});
  const double e_norm = err(y.to(at::kDouble), ref), e_gx = err(grads[0].to(at::kDouble), ref_grads[0]),
               e_gw = err(grads[1].to(at::kDouble), ref_grads[1]);
  std::printf("  fused RMSNorm: max error %.2e, dx %.2e, dweight %.2e\n", e_norm, e_gx, e_gw);
  EXPECT(e_norm < 1e-5);
  EXPECT(e_gx < 1e-5);
  EXPECT(e_gw < 1e-4);

  const int64_t b = 2, t = 7, heads = 3, hd = 8;
  const at::Tensor q = jfa::randn({b, t, heads, hd}, c10::kFloat, 14).requires_grad_(true);
  const at::Tensor angle = jfa::randn({b, t, hd / 2}, c10::kFloat, 15);
  const at::Tensor emb = at::cat({angle, angle}, -1);
  const at::Tensor cos = emb.cos(), sin = emb.sin();
  const at::Tensor gq = jfa::randn({b, t, heads, hd}, c10::kFloat, 16);
  const at::Tensor out = jfa::fused_rope(q, cos, sin);
  const at::Tensor dq = torch::autograd::grad({(out * gq).sum()}, {q})[0];
  const at::Tensor qd = q.detach().to(at::kDouble).requires_grad_(true);
  const at::Tensor rot = at::cat({-qd.narrow(-1, hd / 2, hd / 2), qd.narrow(-1, 0, hd / 2)}, -1);
  const at::Tensor ref_out = qd * cos.to(at::kDouble).unsqueeze(2) + rot * sin.to(at::kDouble).unsqueeze(2);
  const at::Tensor ref_dq = torch::autograd::grad({(ref_out * gq.to(at::kDouble)).sum()}, {qd})[0];
  const double e_rope = err(out.to(at::kDouble), ref_out), e_dq = err(dq.to(at::kDouble), ref_dq);
  std::printf("  fused rotary embedding: max error %.2e, dx %.2e\n", e_rope, e_dq);
  EXPECT(e_rope < 1e-5);
  EXPECT(e_dq < 1e-5);
}

jfa::Json parse(const std::string& text) { return jfa::parse_json(text.data(), text.size(), "t"); }

// The wrapper: strict RFC 8259, nlohmann's errors as ours with the position, JSON.parse's duplicate rule.

#ifdef JFA_LAPACK_SHIM
// native/core/lapack_shim.cpp: the LAPACK routines FAISS needs that libtorch does not export,
// checked against their definitions (reconstruction, A v = lambda v, A A^-1 = I, the syrk formula).
extern "C" {
int sgesvd_(const char*, const char*, int*, int*, float*, int*, float*, float*, int*, float*, int*, float*, int*, int*);
int dsyev_(const char*, const char*, int*, double*, int*, double*, double*, int*, int*);
int ssyrk_(const char*, const char*, int*, int*, float*, float*, int*, float*, float*, int*);
int sgetrf_(int*, int*, float*, int*, int*, int*);
int sgetri_(int*, float*, int*, int*, float*, int*, int*);
int dgetrf_(int*, int*, double*, int*, int*, int*);
int dgetri_(int*, double*, int*, int*, double*, int*, int*);
}

template <typename T>
std::vector<T> random_matrix(int rows, int cols, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist;
  std::vector<T> m(static_cast<size_t>(rows) * cols);
  for (auto& v : m) v = static_cast<T>(dist(gen));
  return m;
}

void test_lapack_shim_svd() {
  for (const char* jobs : {"AA", "SS", "OS", "SO"}) {
    int m = 6, n = 4, lda = 8, mn = 4;
    auto a = random_matrix<float>(lda, n, 1);
    const auto a0 = a;
    std::vector<float> s(mn), u(static_cast<size_t>(m) * m), vt(static_cast<size_t>(n) * n), work(1);
    int ldu = m, ldvt = n, lwork = -1, info = -99;
    sgesvd_(&jobs[0], &jobs[1], &m, &n, a.data(), &lda, s.data(), u.data(), &ldu, vt.data(), &ldvt, work.data(), &lwork, &info);
    EXPECT(info == 0 && work[0] >= 1);
    lwork = static_cast<int>(work[0]);
    work.assign(lwork, 0);
    sgesvd_(&jobs[0], &jobs[1], &m, &n, a.data(), &lda, s.data(), u.data(), &ldu, vt.data(), &ldvt, work.data(), &lwork, &info);
    EXPECT(info == 0);
    // 'O' returns the vectors in a: U's first mn columns (jobu) or VT's first mn rows (jobvt).
    const float* uu = jobs[0] == 'O' ? a.data() : u.data();
    const int lu = jobs[0] == 'O' ? lda : ldu;
    const float* vv = jobs[1] == 'O' ? a.data() : vt.data();
    const int lv = jobs[1] == 'O' ? lda : ldvt;
    double err = 0;
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        double r = 0;
        for (int k = 0; k < mn; ++k) r += uu[i + k * lu] * s[k] * vv[k + j * lv];
        err = std::max(err, std::abs(r - a0[i + j * lda]));
      }
    EXPECT(err < 1e-4);
    EXPECT(std::is_sorted(s.rbegin(), s.rend()) && s[mn - 1] > 0);
  }
  int m = 3, n = 3, lda = 3, ldu = 1, ldvt = 1, lwork = 1, info = 0;
  std::vector<float> a(9, 1.f), s(3), work(1);
  const char bad = 'X';
  sgesvd_(&bad, "N", &m, &n, a.data(), &lda, s.data(), nullptr, &ldu, nullptr, &ldvt, work.data(), &lwork, &info);
  EXPECT(info == -1);
  sgesvd_("N", "N", &m, &n, a.data(), &lda, s.data(), nullptr, &ldu, nullptr, &ldvt, work.data(), &lwork, &info);
  EXPECT(info == 0 && std::abs(s[0] - 3.f) < 1e-5 && std::abs(s[1]) < 1e-5);  // all-ones: one singular value n
}

void test_lapack_shim_syev() {
  int n = 5, lda = 5, lwork = -1, info = -99;
  auto r = random_matrix<double>(n, n, 2);
  std::vector<double> a(25), w(5), work(1);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) a[i + j * n] = r[i + j * n] + r[j + i * n];
  const auto a0 = a;
  dsyev_("Vectors as well", "Upper", &n, a.data(), &lda, w.data(), work.data(), &lwork, &info);
  EXPECT(info == 0);
  lwork = std::max(1, static_cast<int>(work[0]));
  work.assign(lwork, 0);
  dsyev_("V", "U", &n, a.data(), &lda, w.data(), work.data(), &lwork, &info);
  EXPECT(info == 0);
  EXPECT(std::is_sorted(w.begin(), w.end()));
  double err = 0;
  for (int k = 0; k < n; ++k)
    for (int i = 0; i < n; ++i) {
      double av = 0;
      for (int j = 0; j < n; ++j) av += a0[i + j * n] * a[j + k * n];
      err = std::max(err, std::abs(av - w[k] * a[i + k * n]));
    }
  EXPECT(err < 1e-10);
}

void test_lapack_shim_syrk_getri() {
  for (const char* ut : {"UN", "LT"}) {
    int n = 4, k = 3;
    const bool notrans = ut[1] == 'N';
    int lda = notrans ? n : k;
    auto a = random_matrix<float>(lda, notrans ? k : n, 3);
    auto c = random_matrix<float>(n, n, 4);
    const auto c0 = c;
    float alpha = 0.5f, beta = 2.f;
    ssyrk_(&ut[0], &ut[1], &n, &k, &alpha, a.data(), &lda, &beta, c.data(), &n);
    double err = 0;
    bool other_untouched = true;
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) {
        const bool in = ut[0] == 'U' ? i <= j : i >= j;
        if (!in) {
          other_untouched = other_untouched && c[i + j * n] == c0[i + j * n];
          continue;
        }
        double dot = 0;
        for (int l = 0; l < k; ++l) dot += notrans ? a[i + l * n] * a[j + l * n] : a[l + i * k] * a[l + j * k];
        err = std::max(err, std::abs(c[i + j * n] - (alpha * dot + beta * c0[i + j * n])));
      }
    EXPECT(err < 1e-5);
    EXPECT(other_untouched);
  }
  {
    int n = 4, lda = 4, info = -1, lwork = 4;
    auto a = random_matrix<float>(n, n, 5);
    const auto a0 = a;
    std::vector<int> ipiv(n);
    std::vector<float> work(4);
    sgetrf_(&n, &n, a.data(), &lda, ipiv.data(), &info);
    EXPECT(info == 0);
    sgetri_(&n, a.data(), &lda, ipiv.data(), work.data(), &lwork, &info);
    EXPECT(info == 0);
    double err = 0;
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) {
        double r = 0;
        for (int l = 0; l < n; ++l) r += a0[i + l * n] * a[l + j * n];
        err = std::max(err, std::abs(r - (i == j ? 1.0 : 0.0)));
      }
    EXPECT(err < 1e-4);
  }
  {
    int n = 2, lda = 2, info = -1, lwork = 2;
    std::vector<double> a = {1, 2, 2, 4};  // singular
    std::vector<int> ipiv(2);
    std::vector<double> work(2);
    dgetrf_(&n, &n, a.data(), &lda, ipiv.data(), &info);
    dgetri_(&n, a.data(), &lda, ipiv.data(), work.data(), &lwork, &info);
    EXPECT(info == 2);
  }
}
#endif

void test_json() {
  const jfa::Json j = parse(" {\"a\": [1, -2, 2.5, \"x\\u00e9\\ud83d\\ude00\", true, null], \"b\": {}} ");
  EXPECT(j.is_object() && j.size() == 2);
  EXPECT(j["a"][0].get<int>() == 1 && j["a"][1].get<int>() == -2 && j["a"][2].get<double>() == 2.5);
  EXPECT(j["a"][3].get<std::string>() == "x\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT(parse("{\"a\": 1, \"b\": 0, \"a\": 2}")["a"].get<int>() == 2);  // last wins, as JSON.parse
  EXPECT(parse("{\"a\": 1, \"b\": 0, \"a\": 2}").size() == 2);
  EXPECT(parse("1e-5000").get<double>() == 0.0);  // underflow is 0, as JSON.parse

  EXPECT_THROWS(parse("+1"), Range, "t is not valid JSON (line 1, column 1, byte 0: syntax error while parsing value - invalid literal");
  EXPECT_THROWS(parse("01"), Range, "unexpected number literal; expected end of input");
  EXPECT_THROWS(parse("[.5]"), Range, "byte 1: syntax error while parsing value - invalid literal");
  EXPECT_THROWS(parse("[1.]"), Range, "invalid number; expected digit after '.'");
  EXPECT_THROWS(parse("\"a\tb\""), Range, "control character U+0009 (HT) must be escaped");
  EXPECT_THROWS(parse("\"\\ud800\""), Range, "surrogate U+D800..U+DBFF must be followed by U+DC00..U+DFFF");
  EXPECT_THROWS(parse("\"\\udc00\""), Range, "surrogate U+DC00..U+DFFF must follow U+D800..U+DBFF");
  EXPECT_THROWS(parse("\"\xff\""), Range, "ill-formed UTF-8 byte");
  EXPECT_THROWS(parse("\"\xc3\""), Range, "ill-formed UTF-8 byte");
  EXPECT_THROWS(parse("1e5000"), Range, "t is not valid JSON (number overflow parsing '1e5000': beyond the range of a double)");
  EXPECT_THROWS(parse("[-1e5000]"), Range, "number overflow parsing '-1e5000'");
  EXPECT_THROWS(parse("{\"a\": 1} // note"), Range, "invalid literal");  // no comments
  EXPECT_THROWS(parse("[1, 2,]"), Range, "syntax error");
  EXPECT_THROWS(parse("{'a': 1}"), Range, "invalid literal");
  EXPECT_THROWS(parse(""), Range, "t is not valid JSON (line 1, column 1, byte 0: syntax error while parsing value - unexpected end of input");
  EXPECT_THROWS(parse("{\n  \"a\": +1\n}"), Range, "(line 2, column 8, byte 9:");
  // A NUL is no end of the text (nlohmann alone would read "[1]\0x" as [1]).
  EXPECT_THROWS(jfa::parse_json("[1]\0x", 5, "t"), Range, "t is not valid JSON (line 1, column 4, byte 3: a NUL byte)");
  EXPECT_THROWS(jfa::parse_json("[1]  \0\0", 7, "t"), Range, "byte 5: a NUL byte");

  // A long bad token is quoted only in part.
  const std::string long_text = "\"" + std::string(10000, 'x') + "\t\"";
  try {
    parse(long_text);
    EXPECT(false);
  } catch (const jfa::Error& e) {
    EXPECT(std::string(e.what()).size() < 500);
  }
  // Depth: 64 levels are fine, 65 are refused before they cost memory.
  EXPECT(parse(std::string(64, '[') + std::string(64, ']')).is_array());
  EXPECT_THROWS(parse(std::string(65, '[') + std::string(65, ']')), Range, "t is not valid JSON (arrays and objects nest deeper than 64 levels)");
  EXPECT_THROWS(parse(std::string(1000000, '[')), Range, "nest deeper than 64 levels");

  // Integers: exact over the whole uint64 range; fractions, exponents, negatives and strings are not indexes.
  EXPECT(jfa::json_index(parse("18446744073709551615"), UINT64_MAX) == UINT64_MAX);
  EXPECT(jfa::json_index(parse("9007199254740993"), UINT64_MAX) == 9007199254740993ull);  // 2^53 + 1, not rounded
  EXPECT(!jfa::json_index(parse("18446744073709551616"), UINT64_MAX));
  EXPECT(jfa::json_index(parse("7"), 7) == 7u);
  EXPECT(!jfa::json_index(parse("8"), 7));
  EXPECT(!jfa::json_index(parse("-1"), UINT64_MAX));
  EXPECT(!jfa::json_index(parse("1.0"), UINT64_MAX));
  EXPECT(!jfa::json_index(parse("1e3"), UINT64_MAX));
  EXPECT(!jfa::json_index(parse("\"1\""), UINT64_MAX));

  // Writing: objects keep the order they were built in; strings are escaped; bad UTF-8 is our error.
  nlohmann::ordered_json w = nlohmann::ordered_json::object();
  w["z"] = "q\"\\\n\x01\xc3\xa9";
  w["a"] = {1, 2};
  EXPECT(jfa::dump_json(w, "w") == "{\"z\":\"q\\\"\\\\\\n\\u0001\xc3\xa9\",\"a\":[1,2]}");
  EXPECT(parse(jfa::dump_json(w, "w"))["z"].get<std::string>() == w["z"].get<std::string>());
  w["bad"] = "a\xff";
  EXPECT_THROWS(jfa::dump_json(w, "w"), Range, "w cannot be written as JSON (invalid UTF-8 byte at index 1: 0xFF)");
}

const char* kConfig = R"({"model_type": "llama", "vocab_size": 11, "hidden_size": 8, "intermediate_size": 16,
  "num_hidden_layers": 1, "num_attention_heads": 2)";

void test_llama_config_json() {
  const auto config = [](const std::string& rest) { return jfa::LlamaConfig::parse(kConfig + rest, "dir/config.json"); };
  EXPECT(config("}").vocab_size == 11 && config("}").num_key_value_heads == 2 && config("}").head_dim == 4);
  EXPECT(config(R"(, "vocab_size": 13})").vocab_size == 13);  // a repeated key: the last one, as JSON.parse
  EXPECT(config(R"(, "rms_norm_eps": 1e-5, "rope_theta": 500000})").rope_theta == 500000.0);
  EXPECT_THROWS(config(R"(, "vocab_size": 13.5})"), Range, "dir/config.json: 'vocab_size' must be a non-negative integer");
  EXPECT_THROWS(config(R"(, "vocab_size": -13})"), Range, "dir/config.json: 'vocab_size' must be a non-negative integer");
  EXPECT_THROWS(config(R"(, "vocab_size": 1e400})"), Range, "dir/config.json is not valid JSON (number overflow parsing '1e400'");
  EXPECT_THROWS(config(R"(, "vocab_size": 99999999999999999999})"), Range, "'vocab_size' must be a non-negative integer");
  EXPECT_THROWS(config(R"(, "vocab_size": +13})"), Range, "dir/config.json is not valid JSON (line 2, column");
  EXPECT_THROWS(config(R"(, "rms_norm_eps": .5})"), Range, "dir/config.json is not valid JSON");
  EXPECT_THROWS(config(R"(, "tie_word_embeddings": "yes"})"), Range, "'tie_word_embeddings' must be true or false");
  EXPECT_THROWS(config(R"(, "model_type": "falcon"})"), Range, "model_type 'falcon' is not supported (supported: gemma2, gemma3_text, llama, mistral, phi3, qwen2, qwen3)");
  EXPECT_THROWS(config(R"(, "model_type": "gemma"})"), Range, "model_type 'gemma' is not supported: Gemma 1");
  EXPECT_THROWS(config(R"(, "model_type": "gemma3"})"), Range, "model_type 'gemma3' (Gemma3ForConditionalGeneration, text and vision) is not supported");
  // Gemma 3 with transformers' defaults for what a config leaves out: head_dim 256, 4 KV heads, tied,
  // a window of 4096 on all but every 6th layer, rotary bases 1e6 (global) and 1e4 (local), scale 256^-0.5.
  const auto gemma = config(R"(, "model_type": "gemma3_text", "num_hidden_layers": 7, "num_attention_heads": 4})");
  EXPECT(gemma.head_dim == 256 && gemma.num_key_value_heads == 4 && gemma.tie_word_embeddings && gemma.qk_norm && gemma.norm_plus_one &&
         gemma.scale_embeddings && gemma.sandwich_norms && gemma.gelu_tanh && !gemma.qkv_bias);
  EXPECT(gemma.sliding_window == 4096 && gemma.sliding_layers == std::vector<bool>({true, true, true, true, true, false, true}));
  EXPECT(gemma.rope_theta == 1e6 && gemma.rope_local_theta == 1e4 && gemma.rope_linear_factor == 1.0 && gemma.attention_scale == 1.0 / 16);
  const auto gemma4x = config(R"(, "model_type": "gemma3_text", "num_key_value_heads": 1, "num_hidden_layers": 3, "sliding_window_pattern": 2,
    "rope_theta": 5e5, "rope_local_base_freq": 2e4, "rope_scaling": {"rope_type": "linear", "factor": 8.0}, "query_pre_attn_scalar": 64})");
  EXPECT(gemma4x.sliding_layers == std::vector<bool>({true, false, true}) && gemma4x.rope_theta == 5e5 && gemma4x.rope_local_theta == 2e4 &&
         gemma4x.rope_linear_factor == 8.0 && gemma4x.attention_scale == 0.125);
  EXPECT(gemma.attn_logit_softcap == 0 && gemma.final_logit_softcap == 0);
  // Gemma 2: soft-caps 50 and 30 unless null, every other layer global, one rotary table, no q/k norm.
  const auto gemma2 = config(R"(, "model_type": "gemma2", "num_key_value_heads": 1, "num_hidden_layers": 3})");
  EXPECT(gemma2.attn_logit_softcap == 50 && gemma2.final_logit_softcap == 30 && !gemma2.qk_norm && gemma2.norm_plus_one &&
         gemma2.sandwich_norms && gemma2.rope_theta == 10000 && gemma2.rope_local_theta == 0 && gemma2.head_dim == 256 &&
         gemma2.sliding_layers == std::vector<bool>({true, false, true}));
  const auto uncapped = config(R"(, "model_type": "gemma2", "num_key_value_heads": 1, "attn_logit_softcapping": null, "final_logit_softcapping": null})");
  EXPECT(uncapped.attn_logit_softcap == 0 && uncapped.final_logit_softcap == 0);
  // Each family's details as switches: Qwen2's biases skip o_proj; Mistral windows every layer,
  // Qwen only with use_sliding_window and from max_window_layers on.
  const auto qwen2 = config(R"(, "model_type": "qwen2", "sliding_window": 4})");
  EXPECT(qwen2.qkv_bias && !qwen2.o_bias && !qwen2.qk_norm && qwen2.sliding_window == 0);
  const auto qwen3 = config(R"(, "model_type": "qwen3", "num_hidden_layers": 3, "use_sliding_window": true, "sliding_window": 4, "max_window_layers": 1})");
  EXPECT(qwen3.qk_norm && !qwen3.qkv_bias && qwen3.sliding_window == 4 && qwen3.sliding_layers == std::vector<bool>({false, true, true}));
  const auto mistral = config(R"(, "model_type": "mistral", "sliding_window": 4, "attention_bias": true})");
  EXPECT(mistral.sliding_window == 4 && mistral.sliding_layers == std::vector<bool>({true}) && !mistral.qkv_bias);
  EXPECT(config(R"(, "model_type": "phi3"})").fused_projections);
  EXPECT_THROWS(config(R"(, "model_type": "phi3", "rope_scaling": {"type": "longrope"}})"), Range, "rope_scaling of type 'longrope' is not supported");
  EXPECT_THROWS(config(R"(, "model_type": "mistral", "sliding_window": 0})"), Range, "'sliding_window' must be a positive integer or null");
  EXPECT_THROWS(jfa::LlamaConfig::parse("[1]", "c"), Range, "c: not a JSON object");
}

// A safetensors file with the header text as given and `data` zero bytes after it.
std::string raw_safetensors(const std::string& dir, const std::string& name, const std::string& header, size_t data) {
  const std::string path = dir + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  const uint64_t len = header.size();
  std::fwrite(&len, 8, 1, f);
  std::fwrite(header.data(), 1, header.size(), f);
  for (size_t i = 0; i < data; ++i) std::fputc(0, f);
  std::fclose(f);
  return path;
}

void test_safetensors_json() {
  const std::string dir = temp_dir();
  const auto open = [&](const std::string& header, size_t data = 16) {
    return jfa::SafetensorsFile::open(raw_safetensors(dir, "t.safetensors", header, data));
  };
  // The repeated tensor keeps its last description; the repeated metadata key its last value.
  const auto dup = open(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "__metadata__": {"k": "1", "k": "2"},
                           "w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})");
  EXPECT(dup.names().size() == 1 && dup.get("w").size(0) == 4 && dup.metadata().at("k") == "2");
  EXPECT_THROWS(open(R"({"w": {"dtype": "F32", "shape": [+4], "data_offsets": [0, 16]}})"), Range,
                "t.safetensors: header is not valid JSON (line 1, column 34, byte 33: syntax error while parsing value - invalid literal");
  EXPECT_THROWS(open(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1e5000]}})"), Range,
                "t.safetensors: header is not valid JSON (number overflow parsing '1e5000'");
  EXPECT_THROWS(open(R"({"w": {"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]}})"), Range,
                "tensor 'w' has a shape entry that is not a non-negative integer");
  EXPECT_THROWS(open(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16.0]}})"), Range,
                "tensor 'w' has data_offsets that are not two non-negative integers");
  EXPECT_THROWS(open(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [-1, 16]}})"), Range,
                "tensor 'w' has data_offsets that are not two non-negative integers");
  EXPECT_THROWS(open(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}})"), Range,
                "tensor 'w' has data_offsets [16, 0) that run backwards");
  EXPECT_THROWS(open(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 18446744073709551615]}})"), Range,
                "tensor 'w' data [0, 18446744073709551615) lies past the end of the data (16 bytes)");
  // 2^32 * 2^32 elements wrap a uint64 round to 0; they must not pass for an empty tensor, nor
  // reach libtorch, which refuses such a shape even with a 0 in it.
  EXPECT_THROWS(open(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})"), Range,
                "tensor 'w' has shape [4294967296, 4294967296], more elements than a tensor can hold");
  EXPECT_THROWS(open(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 0], "data_offsets": [0, 0]}})"), Range,
                "more elements than a tensor can hold");
  EXPECT_THROWS(open(R"({"w": {"dtype": "F64", "shape": [4611686018427387904], "data_offsets": [0, 16]}})"), Range,
                "tensor 'w' of shape [4611686018427387904] and dtype F64 needs 2^64 or more bytes but has 16");
  EXPECT(open(R"({"w": {"dtype": "F32", "shape": [0, 4294967296], "data_offsets": [0, 0]}})").get("w").numel() == 0);

  // Writing: the header our reader and the format expect, in the order of the data.
  const std::string path = dir + "/w.safetensors";
  jfa::write_safetensors(path, {{"b", jfa::zeros({2}, c10::kFloat)}, {"a\"\n", jfa::zeros({1, 1}, c10::kInt)}}, {{"format", "pt"}});
  {
    FILE* f = std::fopen(path.c_str(), "rb");
    uint64_t len = 0;
    EXPECT(std::fread(&len, 8, 1, f) == 1);
    std::string header(len, '\0');
    EXPECT(std::fread(header.data(), 1, len, f) == len);
    std::fclose(f);
    EXPECT(len % 8 == 0);
    EXPECT(header.rfind(R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("a\"\n":{"dtype":"I32","shape":[1,1],"data_offsets":[8,12]}})", 0) == 0);
  }
  const auto back = jfa::SafetensorsFile::open(path);
  EXPECT(back.names() == std::vector<std::string>({"b", "a\"\n"}) && back.metadata().at("format") == "pt");
  EXPECT_THROWS(jfa::write_safetensors(dir + "/x.safetensors", {{"a\xff", jfa::zeros({1}, c10::kFloat)}}, {}), Range,
                "saveSafetensors: the header cannot be written as JSON (invalid UTF-8 byte at index 1: 0xFF)");
  EXPECT_THROWS(jfa::write_safetensors(dir + "/x.safetensors", {{"a", jfa::zeros({1}, c10::kFloat)}, {"a", jfa::zeros({1}, c10::kFloat)}}, {}),
                Range, "saveSafetensors: tensor 'a' is listed twice");
  EXPECT(!std::filesystem::exists(dir + "/x.safetensors"));
  std::filesystem::remove_all(dir);
}

// The header parser the loader and the fuzz target share: it reads the header and nothing past it,
// and every dtype it knows round-trips through the writer with libtorch's element size.
void test_safetensors_header_parser() {
  const std::string json = R"({"b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}, "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}})";
  std::vector<char> header(8 + json.size());
  const uint64_t len = json.size();
  std::memcpy(header.data(), &len, 8);
  std::memcpy(header.data() + 8, json.data(), json.size());
  // The buffer ends with the header; the file it describes is 12 bytes longer.
  const jfa::SafetensorsHeader h = jfa::parse_safetensors_header(header.data(), header.size() + 12, "m.safetensors");
  EXPECT(h.data_start == 8 + len && h.tensors.size() == 2);
  EXPECT(h.tensors[0].name == "a" && h.tensors[1].name == "b" && h.tensors[1].begin == 4 && h.tensors[1].end == 12);
  EXPECT(std::string(jfa::kSafetensorsDtypes[h.tensors[1].dtype].code) == "F32");
  EXPECT_THROWS(jfa::parse_safetensors_header(header.data(), header.size() + 11, "m.safetensors"), Range,
                "m.safetensors: tensor 'b' data [4, 12) lies past the end of the data (11 bytes)");
  EXPECT_THROWS(jfa::parse_safetensors_header(header.data(), 7, "m.safetensors"), Range,
                "m.safetensors: too short to be a safetensors file (7 bytes)");

  const std::string dir = temp_dir();
  for (const c10::ScalarType type : {c10::kFloat, c10::kHalf, c10::kBFloat16, c10::kDouble, c10::kLong, c10::kInt, c10::kShort,
                                     c10::kChar, c10::kByte, c10::kBool}) {
    const std::string path = dir + "/d.safetensors";
    jfa::write_safetensors(path, {{"t", jfa::zeros({3}, type)}}, {});
    const at::Tensor back = jfa::SafetensorsFile::open(path).get("t");
    EXPECT(back.scalar_type() == type && back.nbytes() == 3 * c10::elementSize(type));
  }
  std::filesystem::remove_all(dir);
}

// A free TCP port on loopback, for the store of the process-group test.
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// Two ranks in two threads of this process, on loopback: sums, broadcast, the store exchange.
void test_process_group() {
  const int port = free_port();
  std::vector<std::vector<at::Tensor>> results(2);
  std::vector<std::vector<std::string>> exchanged(2);
  std::vector<std::string> errors(2);
  auto rank_fn = [&](int rank) {
    try {
      jfa::GroupOptions o;
      o.rank = rank;
      o.world_size = 2;
      o.master_port = port;
      o.timeout_ms = 20000;
      jfa::ProcessGroup g(o);
      std::vector<at::Tensor> flat{at::full({3}, rank + 1.0), at::full({2, 2}, 10.0 * (rank + 1))};
      g.all_reduce(flat, jfa::Bucketing::Flat, 0.5, "flat");
      std::vector<at::Tensor> per{at::full({4}, rank + 1.0)};
      g.all_reduce(per, jfa::Bucketing::PerTensor, 1.0, "per tensor");
      std::vector<at::Tensor> b{at::full({2}, rank == 1 ? 7.0 : 0.0)};
      g.broadcast(b, 1, "broadcast");
      exchanged[rank] = g.exchange("name", "r" + std::to_string(rank));
      g.barrier("end");
      results[rank] = {flat[0], flat[1], per[0], b[0]};
    } catch (const std::exception& e) {
      errors[rank] = e.what();
    }
  };
  std::thread t0(rank_fn, 0), t1(rank_fn, 1);
  t0.join();
  t1.join();
  for (int r = 0; r < 2; ++r) {
    if (!errors[r].empty()) std::fprintf(stderr, "  rank %d: %s\n", r, errors[r].c_str());
    EXPECT(errors[r].empty());
    if (results[r].size() != 4) continue;
    EXPECT(at::allclose(results[r][0], at::full({3}, 1.5)));   // (1 + 2) / 2
    EXPECT(at::allclose(results[r][1], at::full({2, 2}, 15.0)));
    EXPECT(at::allclose(results[r][2], at::full({4}, 3.0)));
    EXPECT(at::allclose(results[r][3], at::full({2}, 7.0)));
    EXPECT((exchanged[r] == std::vector<std::string>{"r0", "r1"}));
  }
  jfa::GroupOptions bad;
  bad.rank = 2;
  bad.world_size = 2;
  EXPECT_THROWS(jfa::ProcessGroup{bad}, Range, "RANK 2 is out of range for WORLD_SIZE 2");
}

int main() {
  const std::pair<const char*, void (*)()> tests[] = {
      {"matmul", test_matmul},
      {"add and sum", test_add_sum},
      {"factories", test_factories},
      {"runtime", test_runtime},
      {"kernels", test_kernels},
      {"causal attention", test_causal_attention},
      {"fused layers", test_fused_layers},
      {"head cross-entropy", test_head_cross_entropy},
      {"skinny linear", test_skinny_linear},
      {"decode attention", test_decode_attention},
      {"faiss flat", test_faiss_flat},
      {"faiss padding and errors", test_faiss_padding_and_errors},
      {"faiss save and load", test_faiss_save_load},
      {"kmeans", test_kmeans},
      {"json", test_json},
      {"llama config json", test_llama_config_json},
      {"safetensors json", test_safetensors_json},
#ifdef JFA_LAPACK_SHIM
      {"lapack shim: gesvd", test_lapack_shim_svd},
      {"lapack shim: syev", test_lapack_shim_syev},
      {"lapack shim: syrk and getri", test_lapack_shim_syrk_getri},
#endif
      {"safetensors header parser", test_safetensors_header_parser},
      {"process group (2 ranks, loopback)", test_process_group},
  };
  int passed = 0;
  int failed = 0;
  for (const auto& [name, run] : tests) {
    const int before = g_failed;
    run();
    if (g_failed == before) {
      ++passed;
    } else {
      ++failed;
      std::fprintf(stderr, "FAILED: %s\n", name);
    }
  }
  std::printf("jfa_core_tests: %d passed, %d failed (%d checks)\n", passed, failed, g_passed + g_failed);
  return failed == 0 ? 0 : 1;
}
