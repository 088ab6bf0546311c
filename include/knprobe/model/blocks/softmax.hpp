#pragma once
// Row-wise softmax and log-softmax, max-subtracted for stability.
//   softmax:     y_j = exp(x_j − max) / Σ_k exp(x_k − max);  dx = y ⊙ (dy − ⟨dy, y⟩)
//   log_softmax: y_j = x_j − logsumexp(x);                   dx = dy − softmax(x) · Σ_k dy_k

#include <cmath>
#include <span>

#include "knprobe/core/parallel.hpp"
#include "knprobe/core/tensor.hpp"

namespace knprobe::blocks {

namespace softmax {

/// Row-wise softmax of x [n × V] into y.
template <class T>
void forward(ConstMatrixRef<T> x, Matrix<T>& y) {
  KNPROBE_REQUIRE(x.cols() > 0, ShapeError, "softmax::forward: input has no columns");
  y.resize(x.rows(), x.cols());
  for (Index r = 0; r < x.rows(); ++r) {
    const T mx = x.row(r).maxCoeff();
    y.row(r) = (x.row(r).array() - mx).exp().matrix();
    y.row(r) /= y.row(r).sum();
  }
}

/// dx = y ⊙ (dy − rowsum(dy ⊙ y)); y is the forward output.
template <class T>
void backward(ConstMatrixRef<T> dy, ConstMatrixRef<T> y, Matrix<T>& dx) {
  knprobe::detail::require_shape(dy, y.rows(), y.cols(), "softmax::backward dy");
  dx.resize(y.rows(), y.cols());
  for (Index r = 0; r < y.rows(); ++r) {
    const T s = dy.row(r).dot(y.row(r));
    dx.row(r) = y.row(r).cwiseProduct((dy.row(r).array() - s).matrix());
  }
}

/// softmax(z.row(row))[target] = exp(z_t − max) / Σ_k exp(z_k − max).
template <class T>
T probability(ConstMatrixRef<T> z, Index row, TokenId target) {
  const T mx = z.row(row).maxCoeff();
  return std::exp(z(row, target) - mx) / (z.row(row).array() - mx).exp().sum();
}

/// The output-head step of a target probability, in place: for every row b with target t_b,
/// returns P_b = softmax(z_b)[t_b] and overwrites z_b with dP_b/dz_b = P_b (e_{t_b} −
/// softmax(z_b)). Rows are independent and split over threads (each row's arithmetic is the same
/// whatever the thread count, so the result is too).
template <class T>
Vector<T> target_probability_gradient(Matrix<T>& z, std::span<const TokenId> targets) {
  KNPROBE_REQUIRE(static_cast<Index>(targets.size()) == z.rows(), ShapeError,
                  "softmax::target_probability_gradient: ", targets.size(), " targets for ",
                  z.rows(), " rows");
  Vector<T> prob(z.rows());
  KNPROBE_PARALLEL_FOR_IF(z.rows() > 1 && z.size() > (Index(1) << 16))
  for (Index b = 0; b < z.rows(); ++b) {
    const TokenId t = targets[static_cast<std::size_t>(b)];
    const T mx = z.row(b).maxCoeff();
    z.row(b) = (z.row(b).array() - mx).exp().matrix();
    z.row(b) /= z.row(b).sum();
    const T p = z(b, t);
    prob[b] = p;
    z.row(b) *= -p;
    z(b, t) += p;
  }
  return prob;
}

}  // namespace softmax

namespace log_softmax {

/// Row-wise log-softmax of x [n × V] into y.
template <class T>
void forward(ConstMatrixRef<T> x, Matrix<T>& y) {
  KNPROBE_REQUIRE(x.cols() > 0, ShapeError, "log_softmax::forward: input has no columns");
  y.resize(x.rows(), x.cols());
  for (Index r = 0; r < x.rows(); ++r) {
    const T mx = x.row(r).maxCoeff();
    const T lse = mx + std::log((x.row(r).array() - mx).exp().sum());
    y.row(r) = (x.row(r).array() - lse).matrix();
  }
}

/// dx = dy − exp(y) · rowsum(dy); y is the forward output.
template <class T>
void backward(ConstMatrixRef<T> dy, ConstMatrixRef<T> y, Matrix<T>& dx) {
  knprobe::detail::require_shape(dy, y.rows(), y.cols(), "log_softmax::backward dy");
  dx.resize(y.rows(), y.cols());
  for (Index r = 0; r < y.rows(); ++r)
    dx.row(r) = dy.row(r) - y.row(r).array().exp().matrix() * dy.row(r).sum();
}

}  // namespace log_softmax
}  // namespace knprobe::blocks
