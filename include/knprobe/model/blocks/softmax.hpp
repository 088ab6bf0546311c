#pragma once
// Row-wise softmax and log-softmax, max-subtracted for stability.
//   softmax:     y_j = exp(x_j − max) / Σ_k exp(x_k − max);  dx = y ⊙ (dy − ⟨dy, y⟩)
//   log_softmax: y_j = x_j − logsumexp(x);                   dx = dy − softmax(x) · Σ_k dy_k

#include <cmath>

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
