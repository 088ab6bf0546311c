#pragma once
// The output head's target probabilities and their input gradients, without the rows × V logits.
//   z_b = x_b Wᵀ over W [V × H] (one row per vocabulary entry), p_b = softmax(z_b),
//   P_b = p_b[t_b],   dP_b/dx_b = Σ_j P_b (δ_{j t_b} − p_bj) W_j = P_b (W_{t_b} − Σ_j p_bj W_j).
// The vocabulary is walked in tiles of rows of W, each thread its own contiguous run of tiles. Each
// row keeps a running max m_b, the sum s_b = Σ_j exp(z_bj − m_b) and the accumulator
// a_b = Σ_j exp(z_bj − m_b) W_j, both rescaled by exp(m_old − m_new) when the max grows (the online
// softmax of Milakov & Gimelshein 2018, as in FlashAttention); the threads' partials merge in
// thread order, so a result is deterministic for a thread count. Then P_b = exp(z_{t_b} − M_b) /
// S_b and dP_b/dx_b = P_b (W_{t_b} − A_b / S_b).
//
// So one call reads W once whatever the number of rows, keeps a tile of logits per thread (in
// cache) instead of writing and re-reading rows × V of them, and — since Σ_j p_bj W_j does not
// depend on the target — every further target of a row (one prompt's candidate answers) costs one
// row of W. Same values as softmax::target_probability_gradient followed by z ↦ dz W up to the
// order of the float sums (tests: blocks_output_head).

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <vector>

#include "knprobe/core/parallel.hpp"
#include "knprobe/core/tensor.hpp"
#include "knprobe/model/blocks/quantized_linear.hpp"

namespace knprobe::blocks::output_head {

namespace detail {

/// Rows of W per tile: a tile of about 1 MiB (measured on Gemma 3 270M, 2 threads: 64 KiB 2.05 s,
/// 256 KiB 1.53 s, 1 MiB 1.42 s, 4 MiB 1.42 s for bench_layer_gradients' batched workload).
template <class T>
Index tile_rows(Index cols) {
  return std::clamp<Index>(Index(1 << 20) / (cols * Index(sizeof(T))), 16, 4096);
}

template <class T>
using Tile = Eigen::Map<const Matrix<T>, 0, Eigen::OuterStride<>>;

/// Rows r0..r0+n−1 of a dense W (a view).
template <class T>
Tile<T> tile(const Matrix<T>& w, Index r0, Index n, Matrix<T>&) {
  return Tile<T>(w.data() + r0 * w.outerStride(), n, w.cols(),
                 Eigen::OuterStride<>(w.outerStride()));
}

/// Rows r0..r0+n−1 of a quantized W, dequantized (edits applied) into the thread's buffer.
inline Tile<float> tile(const QuantizedMatrix& w, Index r0, Index n, MatrixF& buf) {
  buf.resize(n, w.cols());
  w.dequantize_rows(r0, n, buf.data());
  return Tile<float>(buf.data(), n, w.cols(), Eigen::OuterStride<>(w.cols()));
}

/// One thread's partial sums over its tiles.
template <class T>
struct Partial {
  Vector<T> m, s;  ///< running max and Σ exp(z − m), per row
  Matrix<T> a;     ///< Σ exp(z − m) W_j, per row (gradients only)
};

template <class T, class W>
void run(ConstMatrixRef<T> x, const W& w, std::span<const std::vector<TokenId>> targets,
         std::vector<Vector<T>>& prob, std::vector<Matrix<T>>* grad) {
  const Index n = x.rows(), H = x.cols(), V = w.rows();
  knprobe::detail::require_cols(x, w.cols(), "output_head: input x");
  const std::size_t NV = targets.size();
  // The distinct targets of each row (over all sets), by token: each tile finds its own with a
  // binary search and keeps their terms out of the row's sums (see the header).
  struct Entry {
    TokenId t;
    Index b;
  };
  std::vector<Entry> entries;
  for (std::size_t v = 0; v < NV; ++v) {
    KNPROBE_REQUIRE(static_cast<Index>(targets[v].size()) == n, ShapeError,
                    "output_head: ", targets[v].size(), " targets in set ", v, " for ", n, " rows");
    for (Index b = 0; b < n; ++b) {
      const TokenId t = targets[v][static_cast<std::size_t>(b)];
      KNPROBE_REQUIRE(t < V, ArgumentError, "output_head: target ", t,
                      " outside the vocabulary [0, ", V, ")");
      if (t >= 0) entries.push_back({t, b});
    }
  }
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.t != b.t ? a.t < b.t : a.b < b.b; });
  entries.erase(
      std::unique(entries.begin(), entries.end(),
                  [](const Entry& a, const Entry& b) { return a.t == b.t && a.b == b.b; }),
      entries.end());
  const Index E = static_cast<Index>(entries.size());
  Vector<T> ez(E);  // each entry's logit z_bt
  Matrix<T> ew;     // and its row W_t (gradients only)
  if (grad) ew.resize(E, H);

  const Index R = tile_rows<T>(H), tiles = (V + R - 1) / R;
  std::vector<Partial<T>> parts(static_cast<std::size_t>(knprobe::detail::max_threads()));
  constexpr T neg_inf = -std::numeric_limits<T>::infinity();
  KNPROBE_PARALLEL_IF(tiles > 1 && n * V > (Index(1) << 16)) {
    Partial<T>& P = parts[static_cast<std::size_t>(knprobe::detail::thread_num())];
    P.m.setConstant(n, neg_inf);
    P.s.setZero(n);
    if (grad) P.a.setZero(n, H);
    Matrix<T> buf, z(n, R);
    KNPROBE_FOR_STATIC
    for (Index k = 0; k < tiles; ++k) {
      const Index r0 = k * R, nr = std::min(R, V - r0);
      const Tile<T> wk = tile(w, r0, nr, buf);
      auto zk = z.leftCols(nr);
      zk.noalias() = x * wk.transpose();
      const auto lo = std::lower_bound(entries.begin(), entries.end(), r0,
                                       [](const Entry& e, Index r) { return e.t < r; });
      const auto hi = std::lower_bound(lo, entries.end(), r0 + nr,
                                       [](const Entry& e, Index r) { return e.t < r; });
      for (auto e = lo; e != hi; ++e) {
        const Index i = e - entries.begin();
        ez(i) = zk(e->b, e->t - r0);
        if (grad) ew.row(i) = wk.row(e->t - r0);
      }
      for (Index b = 0; b < n; ++b) {
        const T mk = zk.row(b).maxCoeff();
        if (mk > P.m(b)) {
          const T c = std::exp(P.m(b) - mk);  // 0 on the first tile
          P.s(b) *= c;
          if (grad) P.a.row(b) *= c;
          P.m(b) = mk;
        }
        zk.row(b) = (zk.row(b).array() - P.m(b)).exp().matrix();
      }
      for (auto e = lo; e != hi; ++e) zk(e->b, e->t - r0) = 0;  // targets: added at the end
      P.s += zk.rowwise().sum();
      if (grad) P.a.noalias() += zk * wk;
    }
  }
  // Merge in thread order: M = max m_i, S' = Σ s_i e^{m_i − M}, A' = Σ a_i e^{m_i − M} (the sums
  // over the non-target entries).
  Vector<T> M = Vector<T>::Constant(n, neg_inf), S = Vector<T>::Zero(n);
  for (const auto& p : parts)
    if (p.m.size() == n) M = M.cwiseMax(p.m);
  Matrix<T> A;
  if (grad) A.setZero(n, H);
  for (const auto& p : parts) {
    if (p.m.size() != n) continue;
    for (Index b = 0; b < n; ++b) {
      if (p.m(b) == neg_inf) continue;  // a thread without tiles
      const T c = std::exp(p.m(b) - M(b));
      S(b) += c * p.s(b);
      if (grad) A.row(b) += c * p.a.row(b);
    }
  }
  // Per row, its targets u with e_u = exp(z_u − M): S = S' + Σ_u e_u, and for target t
  //   P_t = e_t / S,   dP_t/dx = (P_t / S) (r_t W_t − A' − Σ_{u≠t} e_u W_u),
  //   r_t = S' + Σ_{u≠t} e_u = S (1 − P_t)   (no cancellation when P_t is near 1).
  std::vector<std::vector<Index>> of_row(static_cast<std::size_t>(n));
  Vector<T> e_of(E);
  for (Index i = 0; i < E; ++i) {
    const Index b = entries[static_cast<std::size_t>(i)].b;
    of_row[static_cast<std::size_t>(b)].push_back(i);
    e_of(i) = std::exp(ez(i) - M(b));
  }
  prob.assign(NV, Vector<T>::Zero(n));
  if (grad) grad->assign(NV, Matrix<T>::Zero(n, H));
  for (std::size_t v = 0; v < NV; ++v)
    for (Index b = 0; b < n; ++b) {
      const TokenId t = targets[v][static_cast<std::size_t>(b)];
      if (t < 0) continue;
      const auto& us = of_row[static_cast<std::size_t>(b)];
      T rest = S(b), total = S(b);
      Index self = -1;
      for (const Index i : us) {
        total += e_of(i);
        if (entries[static_cast<std::size_t>(i)].t == t)
          self = i;
        else
          rest += e_of(i);
      }
      const T pt = e_of(self) / total;
      prob[v](b) = pt;
      if (!grad) continue;
      Vector<T> d = rest * ew.row(self).transpose() - A.row(b).transpose();
      for (const Index i : us)
        if (i != self) d -= e_of(i) * ew.row(i).transpose();
      (*grad)[v].row(b) = (pt / total) * d.transpose();
    }
}

}  // namespace detail

/// For each target set v and row b with targets[v][b] ≥ 0: prob[v](b) = softmax(x_b Wᵀ)[t] and
/// grad[v].row(b) = dP/dx_b = P (W_t − Σ_j p_j W_j); rows whose target is negative get 0 and a
/// zero gradient. W is a dense [V × H] matrix or QuantizedMatrix (float).
template <class T, class W>
void target_gradients(ConstMatrixRef<T> x, const W& w,
                      std::span<const std::vector<TokenId>> targets, std::vector<Vector<T>>& prob,
                      std::vector<Matrix<T>>& grad) {
  detail::run<T>(x, w, targets, prob, &grad);
}

/// P_b = softmax(x_b Wᵀ)[t_b] for every row (t_b ≥ 0), without the logits matrix.
template <class T, class W>
Vector<T> target_probabilities(ConstMatrixRef<T> x, const W& w, std::span<const TokenId> targets) {
  const std::vector<TokenId> one(targets.begin(), targets.end());
  std::vector<Vector<T>> prob;
  detail::run<T>(x, w, std::span<const std::vector<TokenId>>(&one, 1), prob, nullptr);
  return std::move(prob[0]);
}

}  // namespace knprobe::blocks::output_head
