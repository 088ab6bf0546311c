#pragma once
// Bounds-checked little-endian cursor over a byte span. Every read past the end throws
// FormatError naming the source and the offset — the parsers never touch memory they were not
// given.

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>

#include "knprobe/core/error.hpp"

namespace knprobe::io {

static_assert(std::endian::native == std::endian::little, "knprobe reads little-endian files");

class ByteReader {
 public:
  ByteReader(std::span<const std::byte> bytes, std::string source)
      : bytes_(bytes), source_(std::move(source)) {}

  /// Reads a trivially copyable little-endian value.
  template <class T>
  T read(const char* what) {
    static_assert(std::is_trivially_copyable_v<T>);
    require(sizeof(T), what);
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  /// Reads n raw bytes as a string.
  std::string read_bytes(std::uint64_t n, const char* what) {
    require(n, what);
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), static_cast<std::size_t>(n));
    pos_ += static_cast<std::size_t>(n);
    return s;
  }

  /// Skips n bytes.
  void skip(std::uint64_t n, const char* what) {
    require(n, what);
    pos_ += static_cast<std::size_t>(n);
  }

  /// Throws unless n more bytes are available.
  void require(std::uint64_t n, const char* what) const {
    KNPROBE_REQUIRE(n <= bytes_.size() - pos_, FormatError, source_, ": truncated while reading ",
                    what, " at byte ", pos_, " (needs ", n, " bytes, ", bytes_.size() - pos_,
                    " left)");
  }

  std::size_t position() const { return pos_; }
  std::size_t remaining() const { return bytes_.size() - pos_; }
  const std::string& source() const { return source_; }

 private:
  std::span<const std::byte> bytes_;
  std::string source_;
  std::size_t pos_ = 0;
};

}  // namespace knprobe::io
