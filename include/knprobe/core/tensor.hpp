#pragma once
// Tensor vocabulary. Eigen row-major matrices hold activations as [rows × features] (rows = tokens,
// possibly of several sequences stacked); xtensor holds N-d results (scores [layers × units]).

#include <cstddef>
#include <cstdint>

#include "knprobe/core/eigen.hpp"
#include "knprobe/core/error.hpp"

#include <xtensor/xtensor.hpp>

namespace knprobe {

using Index = Eigen::Index;
using TokenId = std::int32_t;

template <class T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;
template <class T>
using MatrixRef = Eigen::Ref<Matrix<T>>;
template <class T>
using ConstMatrixRef = Eigen::Ref<const Matrix<T>>;
template <class T>
using ConstVectorRef = Eigen::Ref<const Vector<T>>;
template <class T>
using MatrixMap = Eigen::Map<Matrix<T>>;
template <class T>
using ConstMatrixMap = Eigen::Map<const Matrix<T>>;

using MatrixF = Matrix<float>;
using MatrixD = Matrix<double>;
using VectorF = Vector<float>;
using VectorD = Vector<double>;

/// N-d result containers.
template <class T, std::size_t N>
using Tensor = xt::xtensor<T, N>;

namespace detail {

/// Throws ShapeError naming `what` unless `m` is rows × cols.
template <class Derived>
void require_shape(const Eigen::DenseBase<Derived>& m, Index rows, Index cols, const char* what) {
  KNPROBE_REQUIRE(m.rows() == rows && m.cols() == cols, ShapeError, what, ": expected shape [",
                  rows, " x ", cols, "], got [", m.rows(), " x ", m.cols(), "]");
}

/// Throws ShapeError naming `what` unless `m` has `cols` columns.
template <class Derived>
void require_cols(const Eigen::DenseBase<Derived>& m, Index cols, const char* what) {
  KNPROBE_REQUIRE(m.cols() == cols, ShapeError, what, ": expected ", cols, " columns, got ",
                  m.cols());
}

/// Throws ShapeError naming `what` unless `v` has `size` entries.
template <class Derived>
void require_size(const Eigen::DenseBase<Derived>& v, Index size, const char* what) {
  KNPROBE_REQUIRE(v.size() == size, ShapeError, what, ": expected ", size, " entries, got ",
                  v.size());
}

}  // namespace detail
}  // namespace knprobe
