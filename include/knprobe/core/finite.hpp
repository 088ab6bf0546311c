#pragma once
// Non-finite values (NaN, ±Inf) are never silently carried into a probability or a score: weights
// are checked when a model is loaded, activations and results on the way. The check itself is one
// vectorised pass (Eigen's allFinite); the index of the first bad value is looked up only when
// there is one.

#include <cmath>
#include <cstddef>
#include <string>

#include "knprobe/core/eigen.hpp"
#include "knprobe/core/error.hpp"

namespace knprobe::detail {

/// True when every value of [p, p + n) is finite.
template <class T>
bool all_finite(const T* p, std::size_t n) {
  return Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(p, static_cast<Eigen::Index>(n))
      .allFinite();
}

/// Throws NumericError "<what>: element <i> is nan / inf (the first of ...)" unless every value
/// of [p, p + n) is finite.
template <class T>
void require_finite(const T* p, std::size_t n, const std::string& what) {
  if (all_finite(p, n)) return;
  std::size_t i = 0, bad = 0;
  while (i < n && std::isfinite(p[i])) ++i;
  for (std::size_t k = i; k < n; ++k) bad += !std::isfinite(p[k]);
  throw NumericError(what + ": element " + std::to_string(i) + " is " +
                     (std::isnan(p[i]) ? "NaN" : "infinite") + " (" + std::to_string(bad) +
                     " non-finite values in all)");
}

/// As require_finite, over the coefficients of an Eigen dense object.
template <class Derived>
void require_finite(const Eigen::DenseBase<Derived>& m, const std::string& what) {
  if (m.allFinite()) return;
  const typename Derived::PlainObject copy = m;  // contiguous, for the index
  require_finite(copy.data(), static_cast<std::size_t>(copy.size()), what);
}

}  // namespace knprobe::detail
