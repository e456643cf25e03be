#pragma once
// A caching CPU allocator for libtorch. Freed tensor memory is kept by size class and handed to
// the next allocation of that class instead of going back to malloc. Two reasons:
// - large blocks come back without page faults (a fresh 32+ MiB block costs ~60 ms to touch on
//   our VMs, which dominated whole ops);
// - tensor data stops interleaving with the small long-lived objects a JS runtime allocates
//   (Node-API references live until the event loop turns), which fragmented glibc's heap so badly
//   that a synchronous create/dispose loop grew by the tensor size on every iteration.
#include <cstddef>
#include <cstdint>

namespace jfa {

struct CpuCacheStats {
  size_t allocated_bytes;  // in live tensors (size-class rounded)
  size_t cached_bytes;     // freed, kept for reuse
  size_t limit_bytes;      // cached_bytes never exceeds this
  uint64_t hits;           // allocations served from the cache
  uint64_t misses;         // allocations that went to malloc
};

// Makes it libtorch's CPU allocator. Idempotent; call before the first allocation you care about.
void install_caching_cpu_allocator();
CpuCacheStats cpu_cache_stats();
// 0 disables caching. Shrinks the cache at once if it holds more.
void set_cpu_cache_limit(size_t bytes);
// Returns every cached block to the system, and (glibc) the free memory of malloc's heaps.
void empty_cpu_cache();
// The size class a request of n bytes is served from (exposed for tests).
size_t cpu_cache_class_size(size_t n);

}  // namespace jfa
