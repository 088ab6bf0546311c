#pragma once
// Embedding lookup: row t of the output is scale · E[ids[t]] (scale = sqrt(d) for Gemma, 1 else).

#include <span>

#include "knprobe/core/tensor.hpp"

namespace knprobe::blocks::embedding {

/// y[t] = scale · table[ids[t]]; table [V × d]. Throws Error naming the id when out of range.
template <class T>
void forward(std::span<const TokenId> ids, ConstMatrixRef<T> table, T scale, Matrix<T>& y) {
  y.resize(static_cast<Index>(ids.size()), table.cols());
  for (std::size_t t = 0; t < ids.size(); ++t) {
    KNPROBE_REQUIRE(ids[t] >= 0 && ids[t] < table.rows(), ArgumentError, "embedding: token id ",
                    ids[t], " at position ", t, " is outside the vocabulary [0, ", table.rows(),
                    ")");
    y.row(static_cast<Index>(t)) = table.row(ids[t]) * scale;
  }
}

/// Gradient with respect to the looked-up embedding vectors: d(E[ids[t]]) = scale · dy[t].
/// (Accumulate by id with `scatter_add` when ids repeat.)
template <class T>
void backward(ConstMatrixRef<T> dy, T scale, Matrix<T>& d_rows) {
  d_rows = dy * scale;
}

/// d_table[ids[t]] += d_rows[t] for a [V × d] gradient table.
template <class T>
void scatter_add(std::span<const TokenId> ids, ConstMatrixRef<T> d_rows, Matrix<T>& d_table) {
  KNPROBE_REQUIRE(static_cast<Index>(ids.size()) == d_rows.rows(), ShapeError,
                  "embedding::scatter_add: ", ids.size(), " ids for ", d_rows.rows(), " rows");
  for (std::size_t t = 0; t < ids.size(); ++t) {
    KNPROBE_REQUIRE(ids[t] >= 0 && ids[t] < d_table.rows(), ArgumentError,
                    "embedding::scatter_add: token id ", ids[t], " out of range");
    d_table.row(ids[t]) += d_rows.row(static_cast<Index>(t));
  }
}

}  // namespace knprobe::blocks::embedding
