#pragma once
// Deterministic random numbers: the same seed gives the same stream on every platform (the
// standard distributions are implementation-defined, so we derive values from the raw engine).

#include <cmath>
#include <cstdint>
#include <random>
#include <string_view>

namespace knprobe {

/// std::mt19937_64 (fully specified by the standard) with portable derived distributions.
class Rng {
 public:
  explicit Rng(std::uint64_t seed = 0) : engine_(seed) {}

  /// Uniform integer in [0, 2^64).
  std::uint64_t next() { return engine_(); }

  /// Uniform double in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

  /// Uniform double in [lo, hi).
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }

  /// Uniform integer in [0, n), n > 0 (rejection sampling: no modulo bias).
  std::uint64_t below(std::uint64_t n) {
    const std::uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    std::uint64_t x = engine_();
    while (x >= limit) x = engine_();
    return x % n;
  }

  /// Standard normal (Box-Muller; portable).
  double normal() {
    double u1 = uniform();
    while (u1 <= 0.0) u1 = uniform();
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  std::mt19937_64 engine_;
};

namespace detail {

/// 64-bit FNV-1a hash of the bytes of `s` (seeds derived from names, fingerprints of fact lists).
inline std::uint64_t fnv1a(std::string_view s, std::uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace detail
}  // namespace knprobe
