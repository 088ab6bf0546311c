#pragma once
// GGUF v2/v3 reader (ggml-org/ggml docs/gguf.md): header, metadata key/values of every type
// (arrays included), tensor infos, aligned data section, and dequantization to float.
// Everything is bounds-checked against the mapped file: a malformed file raises FormatError
// naming the file and what was wrong.

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "knprobe/core/finite.hpp"
#include "knprobe/core/tensor.hpp"
#include "knprobe/io/byte_reader.hpp"
#include "knprobe/io/dequant.hpp"
#include "knprobe/io/mapped_file.hpp"

namespace knprobe::io {

enum class GgufType : std::uint32_t {
  u8 = 0,
  i8 = 1,
  u16 = 2,
  i16 = 3,
  u32 = 4,
  i32 = 5,
  f32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  u64 = 10,
  i64 = 11,
  f64 = 12,
};

struct GgufValue;
using GgufArray = std::vector<GgufValue>;

/// One metadata value. Integers are widened to 64 bits, floats to double; `type` keeps the
/// on-disk type.
struct GgufValue {
  GgufType type = GgufType::u8;
  std::variant<std::uint64_t, std::int64_t, double, bool, std::string, std::shared_ptr<GgufArray>>
      value;

  /// Integer value (any integer type). Throws FormatError otherwise.
  std::int64_t as_int(const std::string& key) const {
    if (auto* u = std::get_if<std::uint64_t>(&value)) {
      KNPROBE_REQUIRE(*u <= static_cast<std::uint64_t>(INT64_MAX), FormatError, "GGUF key '", key,
                      "' = ", *u, " is too large");
      return static_cast<std::int64_t>(*u);
    }
    if (auto* i = std::get_if<std::int64_t>(&value)) return *i;
    if (auto* b = std::get_if<bool>(&value)) return *b ? 1 : 0;
    throw FormatError("GGUF key '" + key + "' is not an integer");
  }
  double as_double(const std::string& key) const {
    if (auto* d = std::get_if<double>(&value)) return *d;
    return static_cast<double>(as_int(key));
  }
  const std::string& as_string(const std::string& key) const {
    auto* s = std::get_if<std::string>(&value);
    KNPROBE_REQUIRE(s, FormatError, "GGUF key '", key, "' is not a string");
    return *s;
  }
  const GgufArray& as_array(const std::string& key) const {
    auto* a = std::get_if<std::shared_ptr<GgufArray>>(&value);
    KNPROBE_REQUIRE(a, FormatError, "GGUF key '", key, "' is not an array");
    return **a;
  }
};

struct GgufTensorInfo {
  std::string name;
  std::vector<std::uint64_t> ne;  ///< ne[0] is the contiguous (input) dimension
  std::uint32_t type = 0;
  std::uint64_t offset = 0;  ///< relative to the data section
  std::uint64_t n_bytes = 0;
  const std::byte* data = nullptr;
  std::uint64_t numel() const {
    std::uint64_t n = 1;
    for (auto d : ne) n *= d;
    return n;
  }
};

class GgufFile {
 public:
  /// Parses and validates `path` (magic, version 2 or 3, every length and offset in range, every
  /// tensor type known, tensor data inside the file and not overlapping).
  explicit GgufFile(const std::filesystem::path& path)
      : file_(path), bytes_(file_.bytes()), name_(file_.path()) {
    parse();
  }

  /// Parses bytes held by the caller (they must outlive this object); `name` is used in errors.
  GgufFile(std::span<const std::byte> bytes, std::string name)
      : bytes_(bytes), name_(std::move(name)) {
    parse();
  }

  const std::string& path() const { return name_; }
  std::uint32_t version() const { return version_; }
  std::size_t alignment() const { return alignment_; }
  /// Absolute byte offset of the data section (tensor offsets are relative to it).
  std::size_t data_offset() const { return data_start_; }

  bool has(const std::string& key) const { return kv_.count(key) != 0; }
  /// The value of `key`. Long arrays are decoded into GgufValues on first access (parsing only
  /// validates and indexes them); the typed *_array accessors below never build them.
  const GgufValue& get(const std::string& key) const {
    auto it = kv_.find(key);
    KNPROBE_REQUIRE(it != kv_.end(), FormatError, path(), ": missing metadata key '", key, "'");
    materialize(it->first, it->second);
    return it->second;
  }

  /// Elements of the string array `key` as views into the file's bytes (valid while this file
  /// lives). Throws FormatError when `key` is missing or not an array of strings.
  std::vector<std::string_view> string_array(const std::string& key) const {
    std::vector<std::string_view> out;
    for_each_string(key, [&](std::string_view s) { out.push_back(s); });
    return out;
  }

  /// Calls fn(std::string_view) on each element of the string array `key`, in order, with views
  /// into the file's bytes. Throws FormatError when `key` is missing or not an array of strings.
  template <class F>
  void for_each_string(const std::string& key, F&& fn) const {
    const RawArray& a = raw_array(key, "strings", [](GgufType t) { return t == GgufType::string; });
    ByteReader r(bytes_.subspan(a.begin, a.end - a.begin), path());
    for (std::uint64_t i = 0; i < a.n; ++i) {
      const auto len = r.read<std::uint64_t>("string length");
      r.require(len, "string value");
      fn(std::string_view(reinterpret_cast<const char*>(bytes_.data() + a.begin + r.position()),
                          static_cast<std::size_t>(len)));
      r.skip(len, "string value");
    }
  }

  /// Elements of the numeric array `key` converted to float. Throws FormatError when `key` is
  /// missing or not an array of numbers.
  std::vector<float> float_array(const std::string& key) const { return numeric_array<float>(key); }

  /// Elements of the integer array `key` (booleans as 0 / 1). Throws FormatError when `key` is
  /// missing or not an array of integers.
  std::vector<std::int64_t> int_array(const std::string& key) const {
    return numeric_array<std::int64_t>(key);
  }
  std::int64_t get_int(const std::string& key) const { return get(key).as_int(key); }
  std::int64_t get_int(const std::string& key, std::int64_t fallback) const {
    return has(key) ? get_int(key) : fallback;
  }
  double get_double(const std::string& key) const { return get(key).as_double(key); }
  double get_double(const std::string& key, double fallback) const {
    return has(key) ? get_double(key) : fallback;
  }
  const std::string& get_string(const std::string& key) const { return get(key).as_string(key); }

  /// The integer `key`, which must lie in [lo, hi]: FormatError naming the file, the key, the
  /// value and the range otherwise (a model size read as 4294967328 is refused, not cut to 32).
  std::int64_t get_int_in(const std::string& key, std::int64_t lo, std::int64_t hi) const {
    const std::int64_t v = get_int(key);
    KNPROBE_REQUIRE(v >= lo && v <= hi, FormatError, path(), ": metadata '", key, "' = ", v,
                    " outside [", lo, ", ", hi, "]");
    return v;
  }
  /// As get_int_in; `fallback` when the key is absent.
  std::int64_t get_int_in(const std::string& key, std::int64_t lo, std::int64_t hi,
                          std::int64_t fallback) const {
    return has(key) ? get_int_in(key, lo, hi) : fallback;
  }
  /// The finite number `key` in [lo, hi] (FormatError naming it otherwise; inf and NaN refused).
  double get_double_in(const std::string& key, double lo, double hi) const {
    const double v = get_double(key);
    KNPROBE_REQUIRE(std::isfinite(v) && v >= lo && v <= hi, FormatError, path(), ": metadata '",
                    key, "' = ", v, " outside [", lo, ", ", hi, "]");
    return v;
  }
  double get_double_in(const std::string& key, double lo, double hi, double fallback) const {
    return has(key) ? get_double_in(key, lo, hi) : fallback;
  }
  /// The boolean `key` (GGUF type bool only); `fallback` when absent.
  bool get_bool(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    const auto& v = get(key);
    KNPROBE_REQUIRE(v.type == GgufType::boolean, FormatError, path(), ": metadata '", key,
                    "' is not a boolean");
    return std::get<bool>(v.value);
  }

  /// Throws NumericError naming the tensor unless all its values dequantize to finite numbers.
  void require_finite_tensor(const GgufTensorInfo& t) const {
    const auto n = static_cast<std::size_t>(t.numel());
    const std::size_t i = io::first_non_finite(t.type, t.data, n);
    KNPROBE_REQUIRE(i == n, NumericError, path(), ": tensor '", t.name, "' holds a NaN or ",
                    "infinite value (element ", i, " of ", n, ")");
  }
  /// Every metadata key, in order (nothing is decoded).
  std::vector<std::string> keys() const {
    std::vector<std::string> out;
    for (const auto& [k, _] : kv_) out.push_back(k);
    return out;
  }
  /// Every key / value (all arrays decoded).
  const std::map<std::string, GgufValue>& metadata() const {
    for (auto& [k, v] : kv_) materialize(k, v);
    return kv_;
  }

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  bool has_tensor(const std::string& name) const { return index_.count(name) != 0; }
  const GgufTensorInfo& tensor(const std::string& name) const {
    auto it = index_.find(name);
    KNPROBE_REQUIRE(it != index_.end(), FormatError, path(), ": no tensor named '", name, "'");
    return tensors_[it->second];
  }

  /// All values of a tensor as float, in file order (ne[0] fastest).
  std::vector<float> dequantize(const std::string& name) const {
    const auto& t = tensor(name);
    std::vector<float> out(static_cast<std::size_t>(t.numel()));
    io::dequantize(t.type, t.data, out.size(), out.data());
    knprobe::detail::require_finite(out.data(), out.size(), path() + ": tensor '" + name + "'");
    return out;
  }

  /// A 2-D tensor as a row-major matrix [ne[1] × ne[0]] (= Hugging Face [out × in]); a 1-D
  /// tensor as [1 × ne[0]].
  MatrixF matrix(const std::string& name) const {
    const auto& t = tensor(name);
    KNPROBE_REQUIRE(t.ne.size() <= 2, ShapeError, path(), ": tensor '", name, "' has ", t.ne.size(),
                    " dimensions, expected at most 2");
    const Index cols = static_cast<Index>(t.ne[0]);
    const Index rows = t.ne.size() == 2 ? static_cast<Index>(t.ne[1]) : 1;
    MatrixF m(rows, cols);
    io::dequantize(t.type, t.data, static_cast<std::size_t>(m.size()), m.data());
    knprobe::detail::require_finite(m.data(), static_cast<std::size_t>(m.size()),
                                    path() + ": tensor '" + name + "'");
    return m;
  }

 private:
  static constexpr std::uint64_t k_max_array = std::uint64_t(1) << 32;
  static constexpr int k_max_depth = 4;
  static constexpr std::uint64_t k_eager_array = 1024;  ///< longer arrays are decoded on demand

  /// Where a top-level array of scalars or strings lies in the file.
  struct RawArray {
    GgufType elem = GgufType::u8;
    std::uint64_t n = 0;
    std::size_t begin = 0, end = 0;  ///< absolute byte range of the elements
  };

  static std::size_t scalar_size(GgufType t) {
    switch (t) {
      case GgufType::u8:
      case GgufType::i8:
      case GgufType::boolean:
        return 1;
      case GgufType::u16:
      case GgufType::i16:
        return 2;
      case GgufType::u32:
      case GgufType::i32:
      case GgufType::f32:
        return 4;
      case GgufType::u64:
      case GgufType::i64:
      case GgufType::f64:
        return 8;
      default:
        return 0;
    }
  }

  template <class Accept>
  const RawArray& raw_array(const std::string& key, const char* what, Accept accept) const {
    KNPROBE_REQUIRE(has(key), FormatError, path(), ": missing metadata key '", key, "'");
    auto it = raw_.find(key);
    KNPROBE_REQUIRE(it != raw_.end() && accept(it->second.elem), FormatError, path(),
                    ": metadata key '", key, "' is not an array of ", what);
    return it->second;
  }

  template <class U>
  std::vector<U> numeric_array(const std::string& key) const {
    constexpr bool want_int = std::is_integral_v<U>;
    const RawArray& a = raw_array(key, want_int ? "integers" : "numbers", [](GgufType t) {
      return scalar_size(t) != 0 && (!want_int || (t != GgufType::f32 && t != GgufType::f64));
    });
    std::vector<U> out(static_cast<std::size_t>(a.n));
    const std::byte* p = bytes_.data() + a.begin;  // parse() checked a.n elements fit
    const auto convert = [&]<class E>(E) {
      for (std::size_t i = 0; i < out.size(); ++i) {
        E e;
        std::memcpy(&e, p + i * sizeof(E), sizeof(E));
        out[i] = static_cast<U>(e);
      }
    };
    switch (a.elem) {
      case GgufType::u8:
      case GgufType::boolean:
        convert(std::uint8_t{});
        break;
      case GgufType::i8:
        convert(std::int8_t{});
        break;
      case GgufType::u16:
        convert(std::uint16_t{});
        break;
      case GgufType::i16:
        convert(std::int16_t{});
        break;
      case GgufType::u32:
        convert(std::uint32_t{});
        break;
      case GgufType::i32:
        convert(std::int32_t{});
        break;
      case GgufType::u64:
        convert(std::uint64_t{});
        break;
      case GgufType::i64:
        convert(std::int64_t{});
        break;
      case GgufType::f32:
        convert(float{});
        break;
      case GgufType::f64:
        convert(double{});
        break;
      default:
        break;  // rejected by raw_array
    }
    if constexpr (!want_int) (void)key;
    return out;
  }

  /// Decodes a lazily parsed array into `v` (once; thread-safe).
  void materialize(const std::string& key, GgufValue& v) const {
    if (v.type != GgufType::array) return;
    const std::lock_guard<std::mutex> lock(*lazy_mutex_);
    auto* a = std::get_if<std::shared_ptr<GgufArray>>(&v.value);
    if (!a || *a) return;
    const RawArray& raw = raw_.at(key);
    ByteReader r(bytes_.subspan(raw.begin, raw.end - raw.begin), path());
    *a = read_elements(r, raw.elem, raw.n, 0);
  }

  std::shared_ptr<GgufArray> read_elements(ByteReader& r, GgufType elem, std::uint64_t n,
                                           int depth) const {
    auto arr = std::make_shared<GgufArray>();
    arr->reserve(static_cast<std::size_t>(n));
    for (std::uint64_t i = 0; i < n; ++i) arr->push_back(read_value(r, elem, depth + 1, nullptr));
    return arr;
  }

  /// Reads one value. For a top-level array of scalars or strings (`raw` given), records where its
  /// elements lie and, when it is long, only validates them (decoded later by materialize()).
  GgufValue read_value(ByteReader& r, GgufType type, int depth, RawArray* raw) const {
    GgufValue v;
    v.type = type;
    switch (type) {
      case GgufType::u8:
        v.value = std::uint64_t(r.read<std::uint8_t>("u8 value"));
        break;
      case GgufType::i8:
        v.value = std::int64_t(r.read<std::int8_t>("i8 value"));
        break;
      case GgufType::u16:
        v.value = std::uint64_t(r.read<std::uint16_t>("u16 value"));
        break;
      case GgufType::i16:
        v.value = std::int64_t(r.read<std::int16_t>("i16 value"));
        break;
      case GgufType::u32:
        v.value = std::uint64_t(r.read<std::uint32_t>("u32 value"));
        break;
      case GgufType::i32:
        v.value = std::int64_t(r.read<std::int32_t>("i32 value"));
        break;
      case GgufType::f32:
        v.value = double(r.read<float>("f32 value"));
        break;
      case GgufType::boolean:
        v.value = r.read<std::uint8_t>("bool value") != 0;
        break;
      case GgufType::string:
        v.value = read_string(r, "string value");
        break;
      case GgufType::u64:
        v.value = r.read<std::uint64_t>("u64 value");
        break;
      case GgufType::i64:
        v.value = r.read<std::int64_t>("i64 value");
        break;
      case GgufType::f64:
        v.value = r.read<double>("f64 value");
        break;
      case GgufType::array: {
        KNPROBE_REQUIRE(depth < k_max_depth, FormatError, path(), ": arrays nested too deeply");
        const auto et = r.read<std::uint32_t>("array element type");
        KNPROBE_REQUIRE(et <= 12, FormatError, path(), ": unknown array element type ", et);
        const auto n = r.read<std::uint64_t>("array length");
        // Every element takes at least one byte: a length beyond the bytes left is corrupt.
        KNPROBE_REQUIRE(n <= r.remaining() && n < k_max_array, FormatError, path(),
                        ": array length ", n, " exceeds the file");
        const auto elem = static_cast<GgufType>(et);
        if (raw && elem != GgufType::array) {
          raw->elem = elem;
          raw->n = n;
          raw->begin = r.position();
          if (elem == GgufType::string) {
            for (std::uint64_t i = 0; i < n; ++i)
              r.skip(r.read<std::uint64_t>("string length"), "string value");
          } else {
            r.skip(n * scalar_size(elem), "array elements");
          }
          raw->end = r.position();
          if (n > k_eager_array) {
            v.value = std::shared_ptr<GgufArray>();  // decoded on first get()
            break;
          }
          ByteReader er(bytes_.subspan(raw->begin, raw->end - raw->begin), path());
          v.value = read_elements(er, elem, n, depth);
          break;
        }
        v.value = read_elements(r, elem, n, depth);
        break;
      }
      default:
        throw FormatError(path() + ": unknown metadata value type " +
                          std::to_string(static_cast<std::uint32_t>(type)));
    }
    return v;
  }

  std::string read_string(ByteReader& r, const char* what) const {
    const auto n = r.read<std::uint64_t>(what);
    return r.read_bytes(n, what);
  }

  void parse() {
    ByteReader r(bytes_, path());
    const auto magic = r.read<std::uint32_t>("magic");
    KNPROBE_REQUIRE(magic == 0x46554747u, FormatError, path(), ": not a GGUF file (bad magic)");
    version_ = r.read<std::uint32_t>("version");
    KNPROBE_REQUIRE(version_ == 2 || version_ == 3, FormatError, path(), ": GGUF version ",
                    version_, " is not supported (2 or 3)");
    const auto n_tensors = r.read<std::uint64_t>("tensor count");
    const auto n_kv = r.read<std::uint64_t>("metadata count");
    KNPROBE_REQUIRE(n_tensors <= r.remaining() && n_kv <= r.remaining(), FormatError, path(),
                    ": tensor count ", n_tensors, " / metadata count ", n_kv, " exceed the file");
    for (std::uint64_t i = 0; i < n_kv; ++i) {
      std::string key = read_string(r, "metadata key");
      const auto type = r.read<std::uint32_t>("metadata type");
      KNPROBE_REQUIRE(type <= 12, FormatError, path(), ": key '", key, "' has unknown type ", type);
      KNPROBE_REQUIRE(!kv_.count(key), FormatError, path(), ": duplicate metadata key '", key, "'");
      RawArray raw;
      kv_[key] = read_value(r, static_cast<GgufType>(type), 0, &raw);
      if (raw.end != 0) raw_[key] = raw;
    }
    if (has("general.alignment")) {
      const auto a = get_int("general.alignment");
      KNPROBE_REQUIRE(a > 0 && a <= 65536 && (a & (a - 1)) == 0, FormatError, path(),
                      ": general.alignment ", a, " is not a power of two");
      alignment_ = static_cast<std::size_t>(a);
    }
    for (std::uint64_t i = 0; i < n_tensors; ++i) tensors_.push_back(read_tensor_info(r));
    const std::size_t data_start = (r.position() + alignment_ - 1) / alignment_ * alignment_;
    KNPROBE_REQUIRE(data_start <= bytes_.size(), FormatError, path(),
                    ": data section starts past the end of the file");
    data_start_ = data_start;
    place_tensors(data_start);
  }

  GgufTensorInfo read_tensor_info(ByteReader& r) {
    GgufTensorInfo t;
    t.name = read_string(r, "tensor name");
    const auto n_dims = r.read<std::uint32_t>("tensor dimension count");
    KNPROBE_REQUIRE(n_dims >= 1 && n_dims <= 4, FormatError, path(), ": tensor '", t.name, "' has ",
                    n_dims, " dimensions (1 to 4 allowed)");
    std::uint64_t numel = 1;
    for (std::uint32_t d = 0; d < n_dims; ++d) {
      const auto ne = r.read<std::uint64_t>("tensor dimension");
      KNPROBE_REQUIRE(
          ne > 0 && ne < (std::uint64_t(1) << 40) && numel <= (std::uint64_t(1) << 40) / ne,
          FormatError, path(), ": tensor '", t.name, "' has an invalid dimension ", ne);
      numel *= ne;
      t.ne.push_back(ne);
    }
    t.type = r.read<std::uint32_t>("tensor type");
    const GgmlTypeInfo ti = ggml_type_info(t.type);
    KNPROBE_REQUIRE(ti.block_size != 0, FormatError, path(), ": tensor '", t.name,
                    "' has unknown ggml type ", t.type);
    KNPROBE_REQUIRE(t.ne[0] % ti.block_size == 0, FormatError, path(), ": tensor '", t.name,
                    "' row of ", t.ne[0], " is not a multiple of the ", ti.name, " block size");
    t.n_bytes = numel / ti.block_size * ti.type_size;
    t.offset = r.read<std::uint64_t>("tensor offset");
    KNPROBE_REQUIRE(t.offset % alignment_ == 0, FormatError, path(), ": tensor '", t.name,
                    "' offset ", t.offset, " is not aligned to ", alignment_);
    KNPROBE_REQUIRE(!index_.count(t.name), FormatError, path(), ": duplicate tensor '", t.name,
                    "'");
    index_[t.name] = tensors_.size();
    return t;
  }

  void place_tensors(std::size_t data_start) {
    const std::uint64_t data_size = bytes_.size() - data_start;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
    for (auto& t : tensors_) {
      KNPROBE_REQUIRE(t.offset <= data_size && t.n_bytes <= data_size - t.offset, FormatError,
                      path(), ": tensor '", t.name, "' (", t.n_bytes, " bytes at offset ", t.offset,
                      ") runs past the end of the file");
      t.data = bytes_.data() + data_start + t.offset;
      ranges.emplace_back(t.offset, t.offset + t.n_bytes);
    }
    std::sort(ranges.begin(), ranges.end());
    for (std::size_t i = 1; i < ranges.size(); ++i)
      KNPROBE_REQUIRE(ranges[i].first >= ranges[i - 1].second, FormatError, path(),
                      ": tensor data overlaps at offset ", ranges[i].first);
  }

  MappedFile file_;
  std::span<const std::byte> bytes_;
  std::string name_;
  std::uint32_t version_ = 0;
  std::size_t alignment_ = 32;
  std::size_t data_start_ = 0;
  mutable std::map<std::string, GgufValue> kv_;
  std::map<std::string, RawArray> raw_;
  std::shared_ptr<std::mutex> lazy_mutex_ = std::make_shared<std::mutex>();
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
};

}  // namespace knprobe::io
