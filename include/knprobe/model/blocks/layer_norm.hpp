#pragma once
// LayerNorm over the feature axis: y = (x − mean(x)) / sqrt(var(x) + eps) ⊙ γ + β (biased variance,
// as PyTorch), row by row.

#include <cmath>

#include "knprobe/core/tensor.hpp"

namespace knprobe::blocks::layer_norm {

/// What backward needs from forward: x̂ = (x − μ)·rstd and rstd = 1/sqrt(σ² + eps) per row.
template <class T>
struct Cache {
  Matrix<T> xhat;
  Vector<T> rstd;
};

/// y = x̂ ⊙ γ + β. x [n × d], γ, β [d]. Fills `cache` for backward.
template <class T>
void forward(ConstMatrixRef<T> x, ConstVectorRef<T> gamma, ConstVectorRef<T> beta, T eps,
             Matrix<T>& y, Cache<T>& cache) {
  detail::require_size(gamma, x.cols(), "layer_norm::forward gamma");
  detail::require_size(beta, x.cols(), "layer_norm::forward beta");
  KNPROBE_REQUIRE(eps >= T(0), ArgumentError, "layer_norm::forward eps must be >= 0, got ", eps);
  const Index n = x.rows();
  const T inv_d = T(1) / static_cast<T>(x.cols());
  cache.xhat.resize(n, x.cols());
  cache.rstd.resize(n);
  y.resize(n, x.cols());
  for (Index r = 0; r < n; ++r) {
    const T mean = x.row(r).sum() * inv_d;
    cache.xhat.row(r) = x.row(r).array() - mean;
    const T var = cache.xhat.row(r).squaredNorm() * inv_d;
    const T rstd = T(1) / std::sqrt(var + eps);
    cache.rstd[r] = rstd;
    cache.xhat.row(r) *= rstd;
    y.row(r) = cache.xhat.row(r).cwiseProduct(gamma.transpose()) + beta.transpose();
  }
}

/// dL/dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂)) with g = dL/dy ⊙ γ.
template <class T>
void backward(ConstMatrixRef<T> dy, ConstVectorRef<T> gamma, const Cache<T>& cache, Matrix<T>& dx) {
  detail::require_shape(dy, cache.xhat.rows(), cache.xhat.cols(), "layer_norm::backward dy");
  const T inv_d = T(1) / static_cast<T>(dy.cols());
  dx.resize(dy.rows(), dy.cols());
  for (Index r = 0; r < dy.rows(); ++r) {
    const auto g = dy.row(r).cwiseProduct(gamma.transpose());
    const T mean_g = g.sum() * inv_d;
    const T mean_gx = g.dot(cache.xhat.row(r)) * inv_d;
    dx.row(r) = cache.rstd[r] * (g.array() - mean_g - cache.xhat.row(r).array() * mean_gx).matrix();
  }
}

}  // namespace knprobe::blocks::layer_norm
