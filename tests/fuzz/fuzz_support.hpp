#pragma once
// Helpers shared by the libFuzzer targets: splitting one input into parts, a scratch folder.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace knprobe::fuzz {

/// The input split at NUL bytes into at most `n` parts (the last part keeps the rest).
inline std::vector<std::string> split(const std::uint8_t* data, std::size_t size, std::size_t n) {
  std::vector<std::string> parts(1);
  for (std::size_t i = 0; i < size; ++i) {
    if (data[i] == 0 && parts.size() < n) {
      parts.emplace_back();
      continue;
    }
    parts.back().push_back(static_cast<char>(data[i]));
  }
  parts.resize(n);
  return parts;
}

/// A per-process scratch folder under /tmp, emptied on every call.
inline std::filesystem::path scratch() {
  static const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("knprobe-fuzz-" + std::to_string(::getpid()));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directories(dir);
  return dir;
}

inline void put(const std::filesystem::path& p, const std::string& bytes) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace knprobe::fuzz
