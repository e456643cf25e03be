#pragma once
// What this build links and what the running process sees: versions, devices, threads.
#include <cstdint>
#include <string>

namespace jfa {

struct RuntimeInfo {
  std::string torch_version;  // the libtorch this code was compiled against
  std::string faiss_version;
  bool cuda_built = false;    // the linked libtorch has CUDA
  int64_t cuda_devices = 0;   // visible CUDA devices now
  bool mkl = false;
  std::string cpu_gemm;  // "onednn" or "mkl": what float32 linear layers without gradients run on (cpu_gemm.h)
  bool openmp = false;
  int num_threads = 0;
};

RuntimeInfo runtime_info();

// Intra-op threads for every thread that runs our work. libtorch's OpenMP setting is per
// calling thread, so worker threads call apply_threads() before running a task.
void set_num_threads(int n);
void apply_threads();

// Ends the calling thread's OpenMP thread pool (its idle helper threads exit). libgomp spins only
// ~100 times instead of ~300000 before sleeping once the threads of all pools outnumber the CPUs,
// which made every parallel region of a step on a worker thread wake its helpers through futexes
// (+30% per step at the demo's size) while the main thread's idle pool still existed. So the main
// thread ends its pool when it hands work to a worker, and a worker ends its own when the work is
// done: one pool at a time is alive. The next parallel region on the thread starts a new one.
void release_thread_pool();

// Builds a tiny FAISS flat inner-product index and searches it; returns an empty string on
// success, else what went wrong. Proves at run time that FAISS is linked and working.
std::string faiss_self_check();

}  // namespace jfa
