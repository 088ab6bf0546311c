// What the benchmarks share: best-of-n wall time of a callable, and the `--json FILE` option
// through which benchmarks/run_all.py collects their figures.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace knprobe::bench {

/// The shortest of `reps` wall-clock times of f(), in seconds.
template <class F>
double best_seconds(int reps, F&& f) {
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

/// Takes `--json FILE` out of argv wherever it stands (argc shrinks, the positional arguments
/// keep their order) and returns FILE, or "" when the option is absent.
inline std::string take_json_option(int& argc, char** argv) {
  std::string file;
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0) {
      if (i + 1 >= argc) throw std::invalid_argument("--json needs a file name");
      file = argv[++i];
    } else {
      argv[out++] = argv[i];
    }
  }
  argc = out;
  return file;
}

/// Writes `j` to `file` (nothing when `file` is empty).
inline void write_json(const std::string& file, const nlohmann::json& j) {
  if (file.empty()) return;
  std::ofstream f(file);
  f << j.dump(1) << '\n';
  if (!f) throw std::runtime_error("cannot write " + file);
}

}  // namespace knprobe::bench
