#include "core/safetensors.h"

#include <ATen/ops/from_blob.h>
#include <c10/core/ScalarType.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/checks.h"
#include "core/json.h"
#include "core/safetensors_header.h"

namespace jfa {
namespace {

// The libtorch type of each entry of kSafetensorsDtypes, in its order.
constexpr c10::ScalarType kTypes[] = {
    c10::kFloat, c10::kHalf, c10::kBFloat16, c10::kDouble, c10::kLong, c10::kInt, c10::kShort, c10::kChar, c10::kByte, c10::kBool,
};
static_assert(std::size(kTypes) == std::size(kSafetensorsDtypes), "one libtorch type per safetensors dtype");

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
  SafetensorsHeader header = parse_safetensors_header(bytes, size, path);
  file.data_ = bytes + header.data_start;
  for (auto& t : header.tensors) {
    file.names_.push_back(t.name);
    file.entries_.emplace(std::move(t.name), Entry{kTypes[t.dtype], std::move(t.shape), static_cast<size_t>(t.begin), static_cast<size_t>(t.end)});
  }
  file.metadata_ = std::move(header.metadata);
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
    for (size_t i = 0; i < std::size(kTypes); ++i)
      if (kTypes[i] == t.scalar_type()) code = kSafetensorsDtypes[i].code;
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
