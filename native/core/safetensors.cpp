#include "core/safetensors.h"

#include <ATen/ops/from_blob.h>
#include <c10/core/ScalarType.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/checks.h"
#include "core/json.h"

namespace jfa {
namespace {

struct DtypeCode {
  const char* code;
  c10::ScalarType type;
};

constexpr DtypeCode kCodes[] = {
    {"F32", c10::kFloat}, {"F16", c10::kHalf}, {"BF16", c10::kBFloat16}, {"F64", c10::kDouble},
    {"I64", c10::kLong},  {"I32", c10::kInt},  {"I16", c10::kShort},     {"I8", c10::kChar},
    {"U8", c10::kByte},   {"BOOL", c10::kBool},
};

// Headers larger than this are not safetensors headers (the format caps them at 100 MB).
constexpr uint64_t kMaxHeader = 100'000'000;

[[noreturn]] void bad(const std::string& path, const std::string& what) { throw_range(path + ": " + what); }

std::string errno_text() { return std::strerror(errno); }

}  // namespace

struct SafetensorsFile::Mapping {
  void* addr = MAP_FAILED;
  size_t size = 0;
  ~Mapping() {
    if (addr != MAP_FAILED && size) munmap(addr, size);
  }
};

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile file;
  file.path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) bad(path, "cannot open: " + errno_text());
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    bad(path, "cannot stat: " + errno_text());
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    bad(path, "too short to be a safetensors file (" + std::to_string(size) + " bytes)");
  }
  auto mapping = std::make_shared<Mapping>();
  // Private and writable: a write to a loaded tensor copies the page instead of faulting or
  // reaching the file.
  mapping->addr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (mapping->addr == MAP_FAILED) bad(path, "cannot map: " + errno_text());
  mapping->size = size;
  const auto* bytes = static_cast<const char*>(mapping->addr);

  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);  // little-endian, as on every platform we build for
  if (header_len > kMaxHeader || header_len > size - 8)
    bad(path, "header length " + std::to_string(header_len) + " does not fit the file (" + std::to_string(size) +
                  " bytes): truncated, or not a safetensors file");
  const Json header = parse_json(bytes + 8, header_len, path + ": header");
  if (!header.is_object()) bad(path, "header is not a JSON object");
  const size_t data_size = size - 8 - header_len;
  file.data_ = bytes + 8 + header_len;

  std::vector<std::pair<size_t, std::string>> order;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      if (!info.is_object()) bad(path, "__metadata__ is not an object");
      for (const auto& [k, v] : info.items()) {
        if (!v.is_string()) bad(path, "__metadata__ value of '" + k + "' is not a string");
        file.metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "'";
    if (!info.is_object()) bad(path, where + " is not described by an object");
    const auto dtype = info.find("dtype");
    const auto shape = info.find("shape");
    const auto offsets = info.find("data_offsets");
    if (dtype == info.end() || !dtype->is_string()) bad(path, where + " has no dtype string");
    if (shape == info.end() || !shape->is_array()) bad(path, where + " has no shape array");
    if (offsets == info.end() || !offsets->is_array() || offsets->size() != 2) bad(path, where + " has no data_offsets [begin, end]");
    const auto begin = json_index((*offsets)[0], UINT64_MAX), end = json_index((*offsets)[1], UINT64_MAX);
    if (!begin || !end) bad(path, where + " has data_offsets that are not two non-negative integers");
    if (*end < *begin)
      bad(path, where + " has data_offsets [" + std::to_string(*begin) + ", " + std::to_string(*end) + ") that run backwards");
    Entry entry{};
    const std::string code = dtype->get<std::string>();
    bool known = false;
    for (const auto& c : kCodes)
      if (code == c.code) {
        entry.dtype = c.type;
        known = true;
      }
    if (!known) bad(path, where + " has unsupported dtype '" + code + "'");
    for (const auto& d : *shape) {
      const auto n = json_index(d, INT64_MAX);
      if (!n) bad(path, where + " has a shape entry that is not a non-negative integer");
      entry.shape.push_back(static_cast<int64_t>(*n));
    }
    // libtorch refuses a shape whose running product overflows int64, even with a 0 later on.
    uint64_t numel = 1;
    for (const int64_t d : entry.shape)
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel) || numel > INT64_MAX)
        bad(path, where + " has shape " + shape_str(entry.shape) + ", more elements than a tensor can hold");
    entry.begin = static_cast<size_t>(*begin);
    entry.end = static_cast<size_t>(*end);
    if (entry.end > data_size)
      bad(path, where + " data [" + std::to_string(entry.begin) + ", " + std::to_string(entry.end) +
                    ") lies past the end of the data (" + std::to_string(data_size) + " bytes): the file is truncated");
    uint64_t want = 0;
    const bool huge = __builtin_mul_overflow(numel, static_cast<uint64_t>(c10::elementSize(entry.dtype)), &want);
    if (huge || want != entry.end - entry.begin)
      bad(path, where + " of shape " + shape_str(entry.shape) + " and dtype " + code + " needs " +
                    (huge ? std::string("2^64 or more") : std::to_string(want)) + " bytes but has " +
                    std::to_string(entry.end - entry.begin));
    order.emplace_back(entry.begin, name);
    file.entries_.emplace(name, std::move(entry));
  }
  std::sort(order.begin(), order.end());
  // Each byte of the data belongs to one tensor at most: overlapping tensors would alias each other.
  const std::string* previous = nullptr;
  for (const auto& [begin, name] : order) {
    const Entry& e = file.entries_.at(name);
    if (e.begin == e.end) continue;
    if (previous) {
      const Entry& p = file.entries_.at(*previous);
      if (e.begin < p.end)
        bad(path, "tensors '" + *previous + "' [" + std::to_string(p.begin) + ", " + std::to_string(p.end) + ") and '" + name + "' [" +
                      std::to_string(e.begin) + ", " + std::to_string(e.end) + ") overlap in the data");
    }
    previous = &name;
  }
  for (auto& [begin, name] : order) file.names_.push_back(std::move(name));
  file.mapping_ = std::move(mapping);
  return file;
}

at::Tensor SafetensorsFile::get(const std::string& name) const {
  const auto it = entries_.find(name);
  if (it == entries_.end()) throw_range(path_ + ": no tensor named '" + name + "'");
  const Entry& e = it->second;
  auto keep = mapping_;  // the tensor keeps the mapping alive
  void* ptr = const_cast<char*>(data_ + e.begin);
  return at::from_blob(ptr, e.shape, [keep](void*) mutable { keep.reset(); }, at::TensorOptions().dtype(e.dtype));
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> data;
  // Ordered, so the header lists __metadata__ first and then the tensors in the order of their data.
  nlohmann::ordered_json json = nlohmann::ordered_json::object();
  if (!metadata.empty()) json["__metadata__"] = metadata;
  size_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") throw_range("saveSafetensors: '__metadata__' is not a tensor name");
    if (json.contains(name)) throw_range("saveSafetensors: tensor '" + name + "' is listed twice");
    if (!t.defined()) throw_type("saveSafetensors: tensor '" + name + "' is undefined");
    const char* code = nullptr;
    for (const auto& c : kCodes)
      if (c.type == t.scalar_type()) code = c.code;
    if (!code) throw_type("saveSafetensors: tensor '" + name + "' has dtype " + dtype_name(t.scalar_type()) + ", which safetensors cannot hold");
    at::Tensor cpu = t.detach().to(at::kCPU).contiguous();
    const size_t bytes = cpu.nbytes();
    json[name] = {{"dtype", code}, {"shape", cpu.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(std::move(cpu));
  }
  std::string header = dump_json(json, "saveSafetensors: the header");
  header.append((8 - header.size() % 8) % 8, ' ');  // data starts 8-byte aligned

  const std::string tmp = path + ".tmp-" + std::to_string(getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw_generic("saveSafetensors: cannot create " + tmp + ": " + errno_text());
  const auto write_all = [&](const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n) {
      const ssize_t w = ::write(fd, c, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      c += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  };
  const uint64_t header_len = header.size();
  bool ok = write_all(&header_len, 8) && write_all(header.data(), header.size());
  for (const auto& t : data)
    if (ok) ok = write_all(t.data_ptr(), t.nbytes());
  ok = ok && fsync(fd) == 0;
  const std::string failure = ok ? "" : errno_text();
  ::close(fd);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = ok ? errno_text() : failure;
    std::remove(tmp.c_str());
    throw_generic("saveSafetensors: cannot write " + path + ": " + why);
  }
}

}  // namespace jfa
