#pragma once
// safetensors files (Hugging Face's weight format). Reading memory-maps the file: tensors alias the
// mapping, so loading costs no copy and pages come in as they are touched; the mapping is private,
// so writing into a loaded tensor never reaches the file. Writing is atomic: a temporary file beside
// the target, fsync, rename. Every problem is a jfa::Error naming the file and what is wrong.
#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace jfa {

class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  // In the order of the file's data.
  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  // A CPU tensor aliasing the mapping; throws a Range error if the file has no such tensor.
  at::Tensor get(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  struct Mapping;
  struct Entry {
    c10::ScalarType dtype;
    std::vector<int64_t> shape;
    size_t begin;
    size_t end;
  };
  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  const char* data_ = nullptr;  // start of the byte buffer after the header
  std::vector<std::string> names_;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata);

}  // namespace jfa
