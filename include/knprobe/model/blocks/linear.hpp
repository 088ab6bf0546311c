#pragma once
// Affine map y = x Wᵀ + b with W stored [out × in] (PyTorch nn.Linear layout; GPT-2's Conv1D
// weights are transposed once at load time).

#include "knprobe/core/tensor.hpp"

namespace knprobe::blocks::linear {

/// y = x Wᵀ (+ b). x [n × in], W [out × in], bias [out] or empty. @post y is [n × out].
template <class T>
void forward(ConstMatrixRef<T> x, ConstMatrixRef<T> w, ConstVectorRef<T> bias, Matrix<T>& y) {
  detail::require_cols(x, w.cols(), "linear::forward input x");
  KNPROBE_REQUIRE(bias.size() == 0 || bias.size() == w.rows(), ShapeError,
                  "linear::forward bias: expected ", w.rows(), " entries or none, got ",
                  bias.size());
  y.resize(x.rows(), w.rows());
  y.noalias() = x * w.transpose();
  if (bias.size() != 0) y.rowwise() += bias.transpose();
}

/// y = x Wᵀ without bias.
template <class T>
void forward(ConstMatrixRef<T> x, ConstMatrixRef<T> w, Matrix<T>& y) {
  forward<T>(x, w, Vector<T>(), y);
}

/// dL/dx = dL/dy · W. dy [n × out], W [out × in]. @post dx is [n × in].
template <class T>
void backward(ConstMatrixRef<T> dy, ConstMatrixRef<T> w, Matrix<T>& dx) {
  detail::require_cols(dy, w.rows(), "linear::backward gradient dy");
  dx.resize(dy.rows(), w.cols());
  dx.noalias() = dy * w;
}

}  // namespace knprobe::blocks::linear
