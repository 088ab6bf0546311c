#pragma once
// Central finite differences in double precision, the independent truth every backward is tested
// against.

#include <algorithm>
#include <cmath>
#include <vector>

#include "knprobe/core/rng.hpp"
#include "knprobe/core/tensor.hpp"

namespace knprobe::testing {

/// Matrix of N(0, sd²) entries from `rng`.
template <class T = double>
Matrix<T> random_matrix(Rng& rng, Index rows, Index cols, double sd = 1.0) {
  Matrix<T> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<T>(sd * rng.normal());
  return m;
}

template <class T = double>
Vector<T> random_vector(Rng& rng, Index n, double sd = 1.0, double mean = 0.0) {
  Vector<T> v(n);
  for (Index i = 0; i < n; ++i) v[i] = static_cast<T>(mean + sd * rng.normal());
  return v;
}

/// Relative error ‖g − g_fd‖ / ‖g_fd‖ between an analytic gradient `grad` of `loss` at `x` and
/// central differences (loss(x + h e) − loss(x − h e)) / 2h, over `n_coords` random coordinates
/// plus 4 random unit directions. `loss` must be computed in double.
template <class F>
double gradient_error(F&& loss, const MatrixD& x, const MatrixD& grad, Rng& rng, int n_coords = 96,
                      double h = 1e-5) {
  std::vector<double> analytic, numeric;
  MatrixD xp = x;
  const Index n = x.size();
  const int coords = static_cast<int>(std::min<Index>(n, n_coords));
  for (int c = 0; c < coords; ++c) {
    const Index i = coords == n ? c : static_cast<Index>(rng.below(static_cast<std::uint64_t>(n)));
    const double orig = xp.data()[i];
    xp.data()[i] = orig + h;
    const double fp = loss(xp);
    xp.data()[i] = orig - h;
    const double fm = loss(xp);
    xp.data()[i] = orig;
    analytic.push_back(grad.data()[i]);
    numeric.push_back((fp - fm) / (2 * h));
  }
  for (int d = 0; d < 4; ++d) {
    MatrixD dir = random_matrix(rng, x.rows(), x.cols());
    dir /= dir.norm();
    const double fp = loss(MatrixD(x + h * dir));
    const double fm = loss(MatrixD(x - h * dir));
    analytic.push_back((grad.array() * dir.array()).sum());
    numeric.push_back((fp - fm) / (2 * h));
  }
  double num = 0, den = 0;
  for (std::size_t i = 0; i < analytic.size(); ++i) {
    num += (analytic[i] - numeric[i]) * (analytic[i] - numeric[i]);
    den += numeric[i] * numeric[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
}

/// ⟨r, y⟩: the scalar loss whose gradient with respect to y is r.
inline double project(const MatrixD& r, const MatrixD& y) {
  return (r.array() * y.array()).sum();
}

}  // namespace knprobe::testing
