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

/// dx += dL/dy · W (a second input path into the same dx).
template <class T>
void backward_add(ConstMatrixRef<T> dy, ConstMatrixRef<T> w, Matrix<T>& dx) {
  detail::require_cols(dy, w.rows(), "linear::backward_add gradient dy");
  detail::require_shape(dx, dy.rows(), w.cols(), "linear::backward_add output dx");
  dx.noalias() += dy * w;
}

/// Column j of W [out × in]: the vector input unit j writes.
template <class T>
Vector<T> column(const Matrix<T>& w, Index j) {
  return w.col(j);
}
template <class T>
void set_column(Matrix<T>& w, Index j, const Vector<T>& v) {
  w.col(j) = v;
}
/// Row i of W.
template <class T>
Vector<T> row(const Matrix<T>& w, Index i) {
  return w.row(i).transpose();
}

}  // namespace knprobe::blocks::linear
