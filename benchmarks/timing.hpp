// What the benchmarks share: best-of-n wall time of a callable.
#pragma once
#include <algorithm>
#include <chrono>

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

}  // namespace knprobe::bench
