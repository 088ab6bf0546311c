#pragma once
// Weights kept in their ggml blocks (Q8_0, Q5_0, Q4_K, Q6_K, … as stored in a GGUF file) and the
// linear maps over them. Nothing is dequantized at load time: each product dequantizes a tile of
// rows into a small per-thread buffer (L2-sized) and multiplies it with Eigen, so loading costs
// only the file mapping and a forward pass reads ~4–7× fewer weight bytes than float32.
//
// Edits (value vectors) are exact and exactly undoable: a replaced column j is kept as
// (value_j, δ_j = value_j − base_j) next to the untouched blocks; products add x_j δ_jᵀ, and
// writing the base column back removes the entry, so the model computes bit-identically to
// before the edit.

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "knprobe/core/parallel.hpp"
#include "knprobe/core/tensor.hpp"
#include "knprobe/io/dequant.hpp"
#include "knprobe/io/gguf.hpp"
#include "knprobe/model/concept.hpp"

namespace knprobe {

/// A [rows × cols] float matrix stored as ggml blocks, row-major: row r is cols / block_size
/// consecutive blocks (the GGUF layout of a weight with ne = {cols, rows}). Copies share the
/// blocks (read-only) and copy the column edits.
class QuantizedMatrix {
 public:
  QuantizedMatrix() = default;

  /// Views `rows` × `cols` values of ggml `type` at `data`; `owner` keeps that memory alive.
  QuantizedMatrix(std::uint32_t type, Index rows, Index cols, const std::byte* data,
                  std::shared_ptr<const void> owner)
      : type_(type), rows_(rows), cols_(cols), data_(data), owner_(std::move(owner)) {
    const io::GgmlTypeInfo ti = io::ggml_type_info(type);
    dequant_ = io::detail::blocks_dequantizer(type);
    KNPROBE_REQUIRE(ti.supported && dequant_, FormatError, "QuantizedMatrix: ggml type ", ti.name,
                    " (", type, ") is not supported");
    KNPROBE_REQUIRE(rows > 0 && cols > 0 && cols % ti.block_size == 0, ShapeError,
                    "QuantizedMatrix: ", rows, " x ", cols, " does not fit ", ti.name,
                    " blocks of ", ti.block_size);
    block_values_ = ti.block_size;
    row_bytes_ = static_cast<std::size_t>(cols) / ti.block_size * ti.type_size;
  }

  /// The 2-D tensor `name` of a GGUF file, in place (the file stays mapped while any copy lives).
  static QuantizedMatrix from_gguf(const std::shared_ptr<const io::GgufFile>& f,
                                   const std::string& name) {
    const auto& t = f->tensor(name);
    KNPROBE_REQUIRE(t.ne.size() == 2, ShapeError, f->path(), ": tensor '", name, "' has ",
                    t.ne.size(), " dimensions, expected 2");
    QuantizedMatrix m(t.type, static_cast<Index>(t.ne[1]), static_cast<Index>(t.ne[0]), t.data,
                      f);  // checks the type is supported before its blocks are read
    f->require_finite_tensor(t);
    return m;
  }

  /// An F32 copy of a dense matrix (for checkpoints that are not quantized).
  static QuantizedMatrix from_dense(const MatrixF& m) {
    auto owned = std::make_shared<MatrixF>(m);
    return {static_cast<std::uint32_t>(io::GgmlType::f32), m.rows(), m.cols(),
            reinterpret_cast<const std::byte*>(owned->data()), owned};
  }

  Index rows() const { return rows_; }
  Index cols() const { return cols_; }
  std::uint32_t type() const { return type_; }
  const char* type_name() const { return io::ggml_type_info(type_).name; }
  /// Bytes of block storage (the edits' floats not counted).
  std::size_t storage_bytes() const { return row_bytes_ * static_cast<std::size_t>(rows_); }

  /// Rows r0..r0+n−1 of the *stored* blocks, dequantized into out [n × cols] (edits not applied).
  void dequantize_base(Index r0, Index n, float* out) const {
    dequant_(
        reinterpret_cast<const std::uint8_t*>(data_) + static_cast<std::size_t>(r0) * row_bytes_,
        static_cast<std::size_t>(n * cols_ / block_values_), out);
  }

  /// Rows r0..r0+n−1 with the edits applied, dequantized into out [n × cols] (row-major).
  void dequantize_rows(Index r0, Index n, float* out) const {
    KNPROBE_REQUIRE(r0 >= 0 && n >= 0 && r0 + n <= rows_, ArgumentError, "QuantizedMatrix: rows ",
                    r0, "..", r0 + n, " outside [0, ", rows_, ")");
    dequantize_base(r0, n, out);
    for (const auto& [j, e] : edits_)
      for (Index i = 0; i < n; ++i) out[i * cols_ + j] = e.value(r0 + i);
  }

  /// Row i with the edits applied.
  VectorF row(Index i) const {
    check_index(i, rows_, "row");
    VectorF v(cols_);
    dequantize_base(i, 1, v.data());
    for (const auto& [j, e] : edits_) v(j) = e.value(i);
    return v;
  }

  /// Column j with the edits applied.
  VectorF column(Index j) const {
    check_index(j, cols_, "column");
    if (auto it = edits_.find(j); it != edits_.end()) return it->second.value;
    return base_column(j);
  }

  /// Replaces column j by v. Writing the stored column back removes the edit (bit-exact undo).
  void set_column(Index j, const VectorF& v) {
    check_index(j, cols_, "column");
    detail::require_size(v, rows_, "QuantizedMatrix::set_column v");
    const VectorF base = base_column(j);
    if ((v.array() == base.array()).all()) {
      edits_.erase(j);
      return;
    }
    edits_[j] = Edit{v, v - base};
  }

  /// Number of edited columns.
  std::size_t edited_columns() const { return edits_.size(); }

  /// The whole matrix in float32, edits applied.
  MatrixF to_dense() const {
    MatrixF m(rows_, cols_);
    dequantize_base(0, rows_, m.data());
    for (const auto& [j, e] : edits_) m.col(j) = e.value;
    return m;
  }

  /// y = x Wᵀ. x [n × cols] → y [n × rows]. Tiles of rows are dequantized per thread; each output
  /// column is computed by exactly one thread (deterministic).
  void multiply_transposed(ConstMatrixRef<float> x, MatrixF& y) const {
    detail::require_cols(x, cols_, "QuantizedMatrix product input x");
    y.resize(x.rows(), rows_);
    const Index R = tile_rows(), tiles = (rows_ + R - 1) / R;
    KNPROBE_PARALLEL_IF(tiles > 1) {
      MatrixF buf(R, cols_);
      KNPROBE_FOR_STATIC
      for (Index t = 0; t < tiles; ++t) {
        const Index r0 = t * R, nr = std::min(R, rows_ - r0);
        dequantize_base(r0, nr, buf.data());
        y.middleCols(r0, nr).noalias() = x * buf.topRows(nr).transpose();
      }
    }
    for (const auto& [j, e] : edits_) y.noalias() += x.col(j) * e.delta.transpose();
  }

  /// dx += dy W. dy [n × rows], dx [n × cols]. Each thread sums its tiles into its own buffer;
  /// the buffers are added in thread order (deterministic for a fixed thread count).
  void multiply_add(ConstMatrixRef<float> dy, MatrixF& dx) const {
    detail::require_cols(dy, rows_, "QuantizedMatrix product gradient dy");
    detail::require_shape(dx, dy.rows(), cols_, "QuantizedMatrix product output dx");
    const Index R = tile_rows(), tiles = (rows_ + R - 1) / R;
    std::vector<MatrixF> parts(static_cast<std::size_t>(detail::max_threads()));
    KNPROBE_PARALLEL_IF(tiles > 1) {
      MatrixF buf(R, cols_);
      MatrixF& part = parts[static_cast<std::size_t>(detail::thread_num())];
      part.setZero(dy.rows(), cols_);
      KNPROBE_FOR_STATIC
      for (Index t = 0; t < tiles; ++t) {
        const Index r0 = t * R, nr = std::min(R, rows_ - r0);
        dequantize_base(r0, nr, buf.data());
        part.noalias() += dy.middleCols(r0, nr) * buf.topRows(nr);
      }
    }
    for (const auto& p : parts)
      if (p.size() != 0) dx += p;
    for (const auto& [j, e] : edits_) dx.col(j) += dy * e.delta;
  }

 private:
  struct Edit {
    VectorF value, delta;
  };

  /// Rows per tile: a dequantized tile of about 128 KiB (stays in L2 next to the operands).
  Index tile_rows() const { return std::clamp<Index>(Index(32768) / cols_, 8, 512); }

  VectorF base_column(Index j) const {
    VectorF c(rows_);
    std::vector<float> buf(static_cast<std::size_t>(cols_));
    for (Index i = 0; i < rows_; ++i) {
      dequantize_base(i, 1, buf.data());
      c(i) = buf[static_cast<std::size_t>(j)];
    }
    return c;
  }

  static void check_index(Index i, Index n, const char* what) {
    KNPROBE_REQUIRE(i >= 0 && i < n, ArgumentError, "QuantizedMatrix: ", what, " ", i,
                    " outside [0, ", n, ")");
  }

  std::uint32_t type_ = 0;
  Index rows_ = 0, cols_ = 0;
  const std::byte* data_ = nullptr;
  std::shared_ptr<const void> owner_;
  io::detail::BlocksDequant dequant_ = nullptr;
  std::uint32_t block_values_ = 1;
  std::size_t row_bytes_ = 0;
  std::map<Index, Edit> edits_;
};

namespace detail {

/// Throws ShapeError naming `what` unless `m` is rows × cols.
inline void require_shape(const QuantizedMatrix& m, Index rows, Index cols, const char* what) {
  KNPROBE_REQUIRE(m.rows() == rows && m.cols() == cols, ShapeError, what, ": expected shape [",
                  rows, " x ", cols, "], got [", m.rows(), " x ", m.cols(), "] (", m.type_name(),
                  ")");
}

}  // namespace detail

namespace blocks::linear {

/// y = x Wᵀ over quantized W [out × in] (float only).
template <class T>
requires std::same_as<T, float>
void forward(ConstMatrixRef<T> x, const QuantizedMatrix& w, Matrix<T>& y) {
  w.multiply_transposed(x, y);
}

/// dL/dx = dL/dy · W over quantized W.
template <class T>
requires std::same_as<T, float>
void backward(ConstMatrixRef<T> dy, const QuantizedMatrix& w, Matrix<T>& dx) {
  dx.setZero(dy.rows(), w.cols());
  w.multiply_add(dy, dx);
}

/// dx += dL/dy · W over quantized W.
template <class T>
requires std::same_as<T, float>
void backward_add(ConstMatrixRef<T> dy, const QuantizedMatrix& w, Matrix<T>& dx) {
  w.multiply_add(dy, dx);
}

/// Column j of W (the vector that input unit j writes), edits applied.
inline VectorF column(const QuantizedMatrix& w, Index j) {
  return w.column(j);
}
inline void set_column(QuantizedMatrix& w, Index j, const VectorF& v) {
  w.set_column(j, v);
}
/// Row i of W, edits applied.
inline VectorF row(const QuantizedMatrix& w, Index i) {
  return w.row(i);
}

}  // namespace blocks::linear

namespace blocks::embedding {

/// y[t] = scale · table[ids[t]] with the table kept quantized (only the looked-up rows are
/// dequantized). Throws ArgumentError naming the id when out of range.
template <class T>
requires std::same_as<T, float>
void forward(std::span<const TokenId> ids, const QuantizedMatrix& table, T scale, Matrix<T>& y) {
  y.resize(static_cast<Index>(ids.size()), table.cols());
  for (std::size_t t = 0; t < ids.size(); ++t) {
    KNPROBE_REQUIRE(ids[t] >= 0 && ids[t] < table.rows(), ArgumentError, "embedding: token id ",
                    ids[t], " at position ", t, " is outside the vocabulary [0, ", table.rows(),
                    ")");
    y.row(static_cast<Index>(t)) = table.row(ids[t]).transpose() * scale;
  }
}

}  // namespace blocks::embedding

}  // namespace knprobe
