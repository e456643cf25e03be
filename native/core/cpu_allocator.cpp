#include "core/cpu_allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <mutex>
#include <unistd.h>
#include <map>
#include <vector>

namespace jfa {
namespace {

// Data is 64-byte aligned (like c10's default); the size class sits in the 64 bytes before it,
// so the deleter needs no context and data == context (raw_allocate() relies on that).
constexpr size_t kAlign = 64;
constexpr uint64_t kMagic = 0x6a66612d63707531ull;  // "jfa-cpu1"
// A request may take a cached block up to this many times its own class's size.
constexpr size_t kMaxSlack = 2;

struct Header {
  size_t class_size;
  uint64_t magic;
};

size_t default_limit() {
  if (const char* env = std::getenv("JFA_CPU_CACHE_MB")) return static_cast<size_t>(std::strtoull(env, nullptr, 10)) << 20;
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) / 4 : size_t{1} << 30;
}

class CachingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    if (n == 0) return {nullptr, nullptr, &release, c10::Device(c10::DeviceType::CPU)};
    const size_t cls = cpu_cache_class_size(n);
    void* data = take(cls);
    if (!data) data = fresh(cls);
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }

  CpuCacheStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {allocated_, cached_, limit_, hits_, misses_};
  }

  void set_limit(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    limit_ = bytes;
    trim_locked(limit_);
  }

  void empty() {
    std::lock_guard<std::mutex> lock(mutex_);
    trim_locked(0);
  }

  static CachingCpuAllocator& instance() {
    // Never destroyed: tensors may be freed during static destruction at exit.
    static auto* allocator = new CachingCpuAllocator();
    return *allocator;
  }

 private:
  static Header* header_of(void* data) { return reinterpret_cast<Header*>(static_cast<char*>(data) - kAlign); }

  // The cached block of the smallest class that holds `cls` bytes and is at most kMaxSlack times
  // their size. A fresh block's pages fault on first write (about a microsecond per 4 KiB page
  // here, more under a hypervisor), and shapes that change a little every call (a decode step's
  // growing attention, a refill's width) would otherwise each miss their exact class and take one.
  // The block keeps its own class: it returns to it when freed.
  void* take(size_t cls) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.lower_bound(cls);
    if (it == free_.end() || it->first > cls * kMaxSlack) {
      ++misses_;
      return nullptr;
    }
    const size_t got = it->first;
    void* data = it->second.back();
    it->second.pop_back();
    if (it->second.empty()) free_.erase(it);
    cached_ -= got;
    allocated_ += got;
    ++hits_;
    return data;
  }

  void* fresh(size_t cls) {
    void* base = nullptr;
    if (posix_memalign(&base, kAlign, cls + kAlign) != 0) {
      empty();  // the cache may hold what we need
      if (posix_memalign(&base, kAlign, cls + kAlign) != 0) base = nullptr;
    }
    TORCH_CHECK_WITH(OutOfMemoryError, base != nullptr, "cannot allocate ", cls, " bytes of CPU memory");
    auto* header = static_cast<Header*>(base);
    header->class_size = cls;
    header->magic = kMagic;
    std::lock_guard<std::mutex> lock(mutex_);
    allocated_ += cls;
    return static_cast<char*>(base) + kAlign;
  }

  static void release(void* data) {
    if (!data) return;
    Header* header = header_of(data);
    TORCH_INTERNAL_ASSERT(header->magic == kMagic, "jfa cpu allocator: freeing a block it did not allocate");
    instance().give_back(data, header->class_size);
  }

  void give_back(void* data, size_t cls) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      allocated_ -= cls;
      if (cached_ + cls <= limit_) {
        free_[cls].push_back(data);
        cached_ += cls;
        return;
      }
    }
    std::free(header_of(data));
  }

  void trim_locked(size_t target) {
    for (auto it = free_.begin(); it != free_.end() && cached_ > target;) {
      auto& blocks = it->second;
      while (!blocks.empty() && cached_ > target) {
        std::free(header_of(blocks.back()));
        blocks.pop_back();
        cached_ -= it->first;
      }
      it = blocks.empty() ? free_.erase(it) : std::next(it);
    }
  }

  std::mutex mutex_;
  // Non-empty lists only, by class: take() looks for the smallest class that fits.
  std::map<size_t, std::vector<void*>> free_;
  size_t allocated_ = 0;
  size_t cached_ = 0;
  size_t limit_ = default_limit();
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
};

}  // namespace

size_t cpu_cache_class_size(size_t n) {
  if (n <= 4096) return (n + 63) / 64 * 64;
  // Eight classes per power of two: at most 12.5% of a block is slack.
  size_t top = size_t{1} << (63 - __builtin_clzll(n));
  const size_t step = top / 8;
  return (n + step - 1) / step * step;
}

void install_caching_cpu_allocator() {
  static std::once_flag once;
  std::call_once(once, [] { c10::SetCPUAllocator(&CachingCpuAllocator::instance(), /*priority=*/10); });
}

CpuCacheStats cpu_cache_stats() { return CachingCpuAllocator::instance().stats(); }
void set_cpu_cache_limit(size_t bytes) { CachingCpuAllocator::instance().set_limit(bytes); }
void empty_cpu_cache() {
  CachingCpuAllocator::instance().empty();
#ifdef __GLIBC__
  // Freed blocks (ours, and the JS typed arrays the GC released) stay in glibc's heaps until
  // trimmed: without this, RSS reflects the heaps' high-water mark, not what is in use.
  malloc_trim(0);
#endif
}

}  // namespace jfa
