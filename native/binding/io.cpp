// File formats exported to JS: safetensors read (memory-mapped) and write (atomic).
#include <napi.h>

#include <vector>

#include "binding/boundary.h"
#include "binding/io.h"
#include "binding/tensor.h"
#include "core/safetensors.h"

namespace jfa::binding {
namespace {

std::string path_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (!info[i].IsString() || info[i].As<Napi::String>().Utf8Value().empty())
    throw Napi::TypeError::New(info.Env(), std::string(op) + ": path must be a non-empty string, got " + describe(info[i]));
  return info[i].As<Napi::String>().Utf8Value();
}

Napi::Value load_safetensors_fn(const Napi::CallbackInfo& info) {
  const char* op = "loadSafetensors";
  return guard(info.Env(), op, [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    const SafetensorsFile file = SafetensorsFile::open(path_arg(info, 0, op));
    Napi::Object tensors = Napi::Object::New(env);
    auto names = Napi::Array::New(env, file.names().size());
    // Every tensor is read before any id is made: ids are owned only once JS holds them all.
    std::vector<at::Tensor> read;
    for (const auto& name : file.names()) read.push_back(file.get(name));
    uint32_t k = 0;
    for (const auto& name : file.names()) {
      names.Set(k, name);
      tensors.Set(name, tensor_handle::wrap(env, std::move(read[k++])));
    }
    Napi::Object metadata = Napi::Object::New(env);
    for (const auto& [key, value] : file.metadata()) metadata.Set(key, value);
    Napi::Object out = Napi::Object::New(env);
    out.Set("names", names);
    out.Set("tensors", tensors);
    out.Set("metadata", metadata);
    return out;
  });
}

Napi::Value save_safetensors_fn(const Napi::CallbackInfo& info) {
  const char* op = "saveSafetensors";
  return guard(info.Env(), op, [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    const std::string path = path_arg(info, 0, op);
    if (!info[1].IsObject() || info[1].IsArray())
      throw Napi::TypeError::New(env, std::string(op) + ": tensors must be an object of name -> Tensor, got " + describe(info[1]));
    const Napi::Object obj = info[1].As<Napi::Object>();
    const Napi::Array keys = obj.GetPropertyNames();
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (uint32_t k = 0; k < keys.Length(); ++k) {
      const std::string name = keys.Get(k).As<Napi::String>().Utf8Value();
      const Napi::Value v = obj.Get(name);
      const at::Tensor* t = tensor_handle::unwrap(env, v);
      if (!t && tensor_handle::is_tensor(env, v))
        throw Napi::TypeError::New(env, std::string(op) + ": tensors['" + name + "'] is a disposed tensor");
      if (!t)
        throw Napi::TypeError::New(env, std::string(op) + ": tensors['" + name + "'] must be a live Tensor, got " + describe(v));
      tensors.emplace_back(name, *t);
    }
    std::map<std::string, std::string> metadata;
    if (!info[2].IsUndefined()) {
      if (!info[2].IsObject())
        throw Napi::TypeError::New(env, std::string(op) + ": metadata must be an object of strings, got " + describe(info[2]));
      const Napi::Object m = info[2].As<Napi::Object>();
      const Napi::Array mk = m.GetPropertyNames();
      for (uint32_t k = 0; k < mk.Length(); ++k) {
        const std::string key = mk.Get(k).As<Napi::String>().Utf8Value();
        const Napi::Value v = m.Get(key);
        if (!v.IsString())
          throw Napi::TypeError::New(env, std::string(op) + ": metadata['" + key + "'] must be a string, got " + describe(v));
        metadata[key] = v.As<Napi::String>().Utf8Value();
      }
    }
    write_safetensors(path, tensors, metadata);
    return env.Undefined();
  });
}

}  // namespace

void register_io(Napi::Env env, Napi::Object exports, Signatures& signatures) {
  export_functions(env, exports, signatures, {{"loadSafetensors", 1, load_safetensors_fn}, {"saveSafetensors", 3, save_safetensors_fn}});
}

}  // namespace jfa::binding
