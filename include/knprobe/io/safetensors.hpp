#pragma once
// safetensors reader: `u64 header_len | JSON header | data`. The header maps tensor names to
// {dtype, shape, data_offsets [begin, end)} relative to the data section. Memory-mapped; F32
// tensors are viewed without copying when aligned, F16 / BF16 (and F64) are converted.
// Sharded checkpoints are read through `model.safetensors.index.json` (weight_map: name → file).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "knprobe/core/finite.hpp"
#include "knprobe/core/half.hpp"
#include "knprobe/core/tensor.hpp"
#include "knprobe/io/files.hpp"
#include "knprobe/io/json_get.hpp"
#include "knprobe/io/mapped_file.hpp"

namespace knprobe::io {

enum class SafeDtype { f64, f32, f16, bf16, i64, i32, i16, i8, u8, boolean };

/// Bytes per element of a safetensors dtype.
inline std::size_t dtype_size(SafeDtype d) {
  switch (d) {
    case SafeDtype::f64:
    case SafeDtype::i64:
      return 8;
    case SafeDtype::f32:
    case SafeDtype::i32:
      return 4;
    case SafeDtype::f16:
    case SafeDtype::bf16:
    case SafeDtype::i16:
      return 2;
    default:
      return 1;
  }
}

/// One tensor's header entry; `data` points into the mapped file.
struct SafeTensorInfo {
  std::string name;
  SafeDtype dtype = SafeDtype::f32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;  ///< offsets relative to the data section
  const std::byte* data = nullptr;
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto s : shape) n *= s;
    return n;
  }
};

/// One .safetensors file, validated on open.
class SafetensorsFile {
 public:
  /// Opens and validates `path`: header length within the file, JSON well formed, every dtype
  /// known, shape × dtype size = offset range, ranges inside the data section and not overlapping.
  explicit SafetensorsFile(const std::filesystem::path& path)
      : file_(path), bytes_(file_.bytes()), name_(file_.path()) {
    parse();
  }

  /// Parses bytes held by the caller (they must outlive this object); `name` is used in errors.
  SafetensorsFile(std::span<const std::byte> bytes, std::string name)
      : bytes_(bytes), name_(std::move(name)) {
    parse();
  }

  const std::string& path() const { return name_; }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  const SafeTensorInfo& info(const std::string& name) const {
    auto it = tensors_.find(name);
    KNPROBE_REQUIRE(it != tensors_.end(), FormatError, path(), ": no tensor named '", name, "'");
    return it->second;
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [n, _] : tensors_) out.push_back(n);
    return out;
  }
  const nlohmann::json& metadata() const { return metadata_; }

  /// Zero-copy view of an F32 tensor (throws when the dtype is not F32 or the data is misaligned).
  std::span<const float> f32_view(const std::string& name) const {
    const auto& t = info(name);
    KNPROBE_REQUIRE(t.dtype == SafeDtype::f32, FormatError, path(), ": tensor '", name,
                    "' is not F32");
    KNPROBE_REQUIRE(reinterpret_cast<std::uintptr_t>(t.data) % alignof(float) == 0, FormatError,
                    path(), ": tensor '", name, "' is not 4-byte aligned");
    return {reinterpret_cast<const float*>(t.data), static_cast<std::size_t>(t.numel())};
  }

  /// The tensor's values converted to float (F32 copied; F16, BF16, F64 converted).
  std::vector<float> to_float(const std::string& name) const {
    const auto& t = info(name);
    std::vector<float> out(static_cast<std::size_t>(t.numel()));
    const auto* p = t.data;
    for (std::size_t i = 0; i < out.size(); ++i) {
      switch (t.dtype) {
        case SafeDtype::f32: {
          float v;
          std::memcpy(&v, p + 4 * i, 4);
          out[i] = v;
          break;
        }
        case SafeDtype::f16: {
          std::uint16_t h;
          std::memcpy(&h, p + 2 * i, 2);
          out[i] = half_to_float(h);
          break;
        }
        case SafeDtype::bf16: {
          std::uint16_t h;
          std::memcpy(&h, p + 2 * i, 2);
          out[i] = bf16_to_float(h);
          break;
        }
        case SafeDtype::f64: {
          double v;
          std::memcpy(&v, p + 8 * i, 8);
          out[i] = static_cast<float>(v);
          break;
        }
        default:
          throw FormatError(path() + ": tensor '" + name + "' has a non-float dtype");
      }
    }
    knprobe::detail::require_finite(out.data(), out.size(),
                                    path() + ": tensor '" + name + "' (as float32)");
    return out;
  }

 private:
  static SafeDtype parse_dtype(const std::string& s, const std::string& where) {
    static const std::map<std::string, SafeDtype> k{
        {"F64", SafeDtype::f64},     {"F32", SafeDtype::f32}, {"F16", SafeDtype::f16},
        {"BF16", SafeDtype::bf16},   {"I64", SafeDtype::i64}, {"I32", SafeDtype::i32},
        {"I16", SafeDtype::i16},     {"I8", SafeDtype::i8},   {"U8", SafeDtype::u8},
        {"BOOL", SafeDtype::boolean}};
    auto it = k.find(s);
    KNPROBE_REQUIRE(it != k.end(), FormatError, where, ": unknown dtype '", s, "'");
    return it->second;
  }

  void parse() {
    const auto& p = path();
    const std::size_t size = bytes_.size();
    KNPROBE_REQUIRE(size >= 8, FormatError, p, ": truncated (", size,
                    " bytes, need at least 8 for the header length)");
    std::uint64_t n = 0;
    std::memcpy(&n, bytes_.data(), 8);
    KNPROBE_REQUIRE(n <= size - 8, FormatError, p, ": header length ", n,
                    " runs past the end of the file (", size, " bytes)");
    const auto* hdr = reinterpret_cast<const char*>(bytes_.data() + 8);
    KNPROBE_REQUIRE(n > 0 && hdr[0] == '{', FormatError, p,
                    ": the header does not start with '{' (wrong header length?)");
    KNPROBE_REQUIRE(json_depth_ok(std::string_view(hdr, n)), FormatError, p,
                    ": header JSON nested too deeply");
    nlohmann::json j = nlohmann::json::parse(hdr, hdr + n, nullptr, /*allow_exceptions=*/false);
    KNPROBE_REQUIRE(j.is_object(), FormatError, p, ": header is not a JSON object");
    const std::byte* data = bytes_.data() + 8 + n;
    const std::uint64_t data_size = size - 8 - n;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() == "__metadata__") {
        KNPROBE_REQUIRE(it.value().is_object(), FormatError, p,
                        ": __metadata__ must be a JSON object");
        metadata_ = it.value();
        continue;
      }
      tensors_.emplace(it.key(), parse_entry(it.key(), it.value(), data, data_size));
      const auto& t = tensors_.at(it.key());
      if (t.end > t.begin) ranges.emplace_back(t.begin, t.end);
    }
    // The format requires the tensors to cover the data buffer exactly, without holes: a header
    // length off by a few bytes (absorbed by the header's trailing padding) shifts every tensor,
    // and shows here as bytes before the first tensor or after the last.
    std::sort(ranges.begin(), ranges.end());
    std::uint64_t covered = 0;
    for (const auto& [b, e] : ranges) {
      KNPROBE_REQUIRE(b >= covered, FormatError, p, ": tensor data ranges overlap at offset ", b);
      KNPROBE_REQUIRE(b == covered, FormatError, p, ": data bytes [", covered, ", ", b,
                      ") belong to no tensor (wrong header length, or a hole between tensors)");
      covered = e;
    }
    KNPROBE_REQUIRE(covered == data_size, FormatError, p, ": data bytes [", covered, ", ",
                    data_size,
                    ") after the last tensor belong to no tensor (wrong header length, or "
                    "trailing bytes)");
  }

  SafeTensorInfo parse_entry(const std::string& name, const nlohmann::json& e,
                             const std::byte* data, std::uint64_t data_size) const {
    const std::string where = path() + ": tensor '" + name + "'";
    KNPROBE_REQUIRE(e.is_object() && e.contains("dtype") && e["dtype"].is_string() &&
                        e.contains("shape") && e["shape"].is_array() &&
                        e.contains("data_offsets") && e["data_offsets"].is_array() &&
                        e["data_offsets"].size() == 2,
                    FormatError, where, ": needs dtype, shape and two data_offsets");
    SafeTensorInfo t;
    t.name = name;
    t.dtype = parse_dtype(e["dtype"].get<std::string>(), where);
    std::uint64_t numel = 1;
    for (const auto& s : e["shape"]) {
      KNPROBE_REQUIRE(
          s.is_number_unsigned() || (s.is_number_integer() && s.get<std::int64_t>() >= 0),
          FormatError, where, ": shape entries must be non-negative integers");
      const auto d = s.get<std::uint64_t>();
      KNPROBE_REQUIRE(d == 0 || numel <= (std::uint64_t(1) << 50) / d, FormatError, where,
                      ": shape too large");
      numel *= d;
      t.shape.push_back(static_cast<std::int64_t>(d));
    }
    for (const auto& o : e["data_offsets"])
      KNPROBE_REQUIRE(
          o.is_number_unsigned() || (o.is_number_integer() && o.get<std::int64_t>() >= 0),
          FormatError, where, ": data_offsets must be non-negative integers");
    t.begin = e["data_offsets"][0].get<std::uint64_t>();
    t.end = e["data_offsets"][1].get<std::uint64_t>();
    KNPROBE_REQUIRE(t.begin <= t.end && t.end <= data_size, FormatError, where, ": data_offsets [",
                    t.begin, ", ", t.end, ") outside the data section of ", data_size, " bytes");
    KNPROBE_REQUIRE(t.end - t.begin == numel * dtype_size(t.dtype), FormatError, where, ": ",
                    t.end - t.begin,
                    " bytes do not match shape × dtype size = ", numel * dtype_size(t.dtype));
    t.data = data + t.begin;
    return t;
  }

  MappedFile file_;
  std::span<const std::byte> bytes_;
  std::string name_;
  std::map<std::string, SafeTensorInfo> tensors_;
  nlohmann::json metadata_;
};

/// A checkpoint directory: `model.safetensors`, or shards listed by
/// `model.safetensors.index.json`. Tensor lookup by name across shards.
class SafetensorsCheckpoint {
 public:
  /// `path` is a directory, a single .safetensors file, or an index .json file.
  explicit SafetensorsCheckpoint(const std::filesystem::path& path) {
    namespace fs = std::filesystem;
    fs::path index;
    if (fs::is_directory(path)) {
      dir_ = path;
      if (fs::exists(path / "model.safetensors.index.json"))
        index = path / "model.safetensors.index.json";
      else
        add_shard(path / "model.safetensors");
    } else if (path.extension() == ".json") {
      dir_ = path.parent_path();
      index = path;
    } else {
      dir_ = path.parent_path();
      add_shard(path);
    }
    if (!index.empty()) read_index(index);
  }

  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  const SafetensorsFile& shard_of(const std::string& name) const {
    auto it = where_.find(name);
    KNPROBE_REQUIRE(it != where_.end(), FormatError, dir_.string(), ": checkpoint has no tensor '",
                    name, "'");
    return *shards_[it->second];
  }
  const SafeTensorInfo& info(const std::string& name) const { return shard_of(name).info(name); }
  std::vector<float> to_float(const std::string& name) const {
    return shard_of(name).to_float(name);
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [n, _] : where_) out.push_back(n);
    return out;
  }
  const std::filesystem::path& directory() const { return dir_; }

 private:
  void add_shard(const std::filesystem::path& file) {
    shards_.push_back(std::make_unique<SafetensorsFile>(file));
    for (const auto& n : shards_.back()->names()) where_[n] = shards_.size() - 1;
  }

  void read_index(const std::filesystem::path& index) {
    nlohmann::json j =
        parse_json(read_file(index, "safetensors index", std::uintmax_t(64) << 20), index.string());
    KNPROBE_REQUIRE(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
                    FormatError, index.string(), ": no weight_map object");
    std::map<std::string, std::size_t> shard_ids;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      KNPROBE_REQUIRE(it.value().is_string(), FormatError, index.string(), ": weight_map['",
                      it.key(), "'] is not a file name");
      const std::string file = it.value().get<std::string>();
      KNPROBE_REQUIRE(file.find('/') == std::string::npos && file.find("..") == std::string::npos,
                      FormatError, index.string(), ": shard name '", file,
                      "' leaves the directory");
      if (!shard_ids.count(file)) {
        shards_.push_back(std::make_unique<SafetensorsFile>(dir_ / file));
        shard_ids[file] = shards_.size() - 1;
      }
      KNPROBE_REQUIRE(shards_[shard_ids[file]]->contains(it.key()), FormatError, index.string(),
                      ": tensor '", it.key(), "' is not in shard ", file);
      where_[it.key()] = shard_ids[file];
    }
  }

  std::filesystem::path dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::map<std::string, std::size_t> where_;
};

}  // namespace knprobe::io
