#pragma once
// The output head's target probabilities and their input gradients, without the rows × V logits.
//   z_b = x_b Wᵀ over W [V × H] (one row per vocabulary entry), p_b = softmax(z_b),
//   P_b = p_b[t],   dP_b/dx_b = Σ_j P_b (δ_jt − p_bj) W_j = P_b (W_t − Σ_j p_bj W_j).
// The vocabulary is walked in tiles of rows of W, each thread its own contiguous run of tiles. Each
// row keeps its running max m_b = z_bk at token k, and over the other tokens the sum
// s_b = Σ_{j≠k} exp(z_bj − m_b) and the accumulator a_b = Σ_{j≠k} exp(z_bj − m_b) W_j, rescaled by
// exp(m_old − m_new) when the max grows (the old max's term 1 · W_k then joins them) — the online
// softmax of Milakov & Gimelshein 2018, as in FlashAttention. The threads' partials merge in thread
// order (deterministic for a thread count; the first thread holding the global max keeps it out).
// With S = 1 + s_b and e_t = exp(z_bt − m_b):
//   P_b = e_t / S;
//   t = k (the argmax):  dP_b/dx_b = (P_b / S) (s_b W_t − a_b)           (Σ_{j≠t} e_j (W_t − W_j))
//   t ≠ k:               dP_b/dx_b = P_b (W_t − (a_b + W_k) / S)          (P_b ≤ 1/2 here).
// Keeping the argmax out of the sums is what keeps float32 accurate when P_b is near 1 (then t is
// the argmax): the direct form W_t − Σ_j p_bj W_j would cancel to O(1 − P_b) and lose digits in
// proportion to 1 / (1 − P_b) (1.6e-2 of the gradient at P = 0.999 in float32).
//
// So one call reads W once whatever the number of rows, keeps a tile of logits per thread instead
// of writing and re-reading rows × V of them, and the sums depend on the row only, not on its
// targets: every target of a row (one prompt's candidate answers, several target sets) costs one
// row of W, and each target's values are bit-identical to a call with that target alone. Same
// values as softmax::target_probability_gradient followed by z ↦ dz W up to the order of the float
// sums (tests: blocks_output_head).

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <type_traits>
#include <utility>
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

/// Rows r0..r0+n−1 of a quantized W, dequantized (edits applied) into the thread's buffer (sized
/// for a whole tile before the parallel region).
inline Tile<float> tile(const QuantizedMatrix& w, Index r0, Index n, MatrixF& buf) {
  if (buf.size() < n * w.cols()) buf.resize(n, w.cols());
  w.dequantize_rows(r0, n, buf.data());
  return Tile<float>(buf.data(), n, w.cols(), Eigen::OuterStride<>(w.cols()));
}

/// One thread's partial sums over its tiles (see the header).
template <class T>
struct Partial {
  Vector<T> m, s;        ///< running max and Σ_{j≠k} exp(z − m), per row
  std::vector<Index> k;  ///< the running argmax, per row (−1 before the first tile)
  Matrix<T> a, wk;       ///< Σ_{j≠k} exp(z − m) W_j and W_k, per row (gradients only)
  Matrix<T> z, buf;      ///< a tile of logits; a dequantized tile of W
};

/// The (row, target) pairs of all target sets, distinct, by token.
struct Entry {
  TokenId t;
  Index b;
};

inline std::vector<Entry> collect_targets(std::span<const std::vector<TokenId>> targets, Index n,
                                          Index V) {
  std::vector<Entry> entries;
  for (std::size_t v = 0; v < targets.size(); ++v) {
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
  return entries;
}

/// One tile of a thread's pass: logits, the targets' logits and rows of W, then the online update.
template <class T, class W>
void tile_step(ConstMatrixRef<T> x, const W& w, Index r0, Index nr,
               const std::vector<Entry>& entries, Vector<T>& ez, Matrix<T>* ew, Partial<T>& part) {
  const bool grad = ew != nullptr;
  const Tile<T> wt = tile(w, r0, nr, part.buf);
  auto zt = part.z.leftCols(nr);
  zt.noalias() = x * wt.transpose();
  const auto lo = std::lower_bound(entries.begin(), entries.end(), r0,
                                   [](const Entry& e, Index r) { return e.t < r; });
  for (auto e = lo; e != entries.end() && e->t < r0 + nr; ++e) {
    const Index i = e - entries.begin();
    ez(i) = zt(e->b, e->t - r0);
    if (grad) ew->row(i) = wt.row(e->t - r0);
  }
  for (Index b = 0; b < x.rows(); ++b) {
    Index j = 0;
    const T mt = zt.row(b).maxCoeff(&j);
    const bool moved = mt > part.m(b);
    if (moved) {
      if (part.k[static_cast<std::size_t>(b)] >= 0) {  // the old max joins the sums, rescaled
        const T c = std::exp(part.m(b) - mt);
        part.s(b) = c * (part.s(b) + T(1));
        if (grad) part.a.row(b) = c * (part.a.row(b) + part.wk.row(b));
      }
      part.m(b) = mt;
      part.k[static_cast<std::size_t>(b)] = r0 + j;
      if (grad) part.wk.row(b) = wt.row(j);
    }
    zt.row(b) = (zt.row(b).array() - part.m(b)).exp().matrix();
    if (moved) zt(b, j) = 0;  // the max stays out of the sums
    part.s(b) += zt.row(b).sum();
  }
  if (grad) part.a.noalias() += zt * wt;
}

template <class T, class W>
void run(ConstMatrixRef<T> x, const W& w, std::span<const std::vector<TokenId>> targets,
         std::vector<Vector<T>>& prob, std::vector<Matrix<T>>* grad) {
  const Index n = x.rows(), H = x.cols(), V = w.rows();
  knprobe::detail::require_cols(x, w.cols(), "output_head: input x");
  KNPROBE_REQUIRE(H > 0 && V > 0, ShapeError, "output_head: empty head [", V, " x ", H, "]");
  const std::size_t NV = targets.size();
  const std::vector<Entry> entries = collect_targets(targets, n, V);
  prob.assign(NV, Vector<T>::Zero(n));
  if (grad) grad->assign(NV, Matrix<T>::Zero(n, H));
  if (entries.empty()) return;  // nothing asked: no pass over W
  const Index E = static_cast<Index>(entries.size());
  Vector<T> ez(E);  // each entry's logit z_bt
  Matrix<T> ew;     // and its row W_t (gradients only)
  if (grad) ew.resize(E, H);

  const Index R = tile_rows<T>(H), tiles = (V + R - 1) / R;
  constexpr T neg_inf = -std::numeric_limits<T>::infinity();
  // Every buffer is allocated here, outside the parallel region (nothing in it allocates but
  // Eigen's GEMM workspace).
  const bool parallel = tiles > 1 && n * V > (Index(1) << 16);
  std::vector<Partial<T>> parts(
      static_cast<std::size_t>(parallel ? knprobe::detail::max_threads() : 1));
  for (auto& part : parts) {
    part.m.setConstant(n, neg_inf);
    part.s.setZero(n);
    part.k.assign(static_cast<std::size_t>(n), -1);
    if (grad) {
      part.a.setZero(n, H);
      part.wk.setZero(n, H);
    }
    part.z.resize(n, R);
    if constexpr (std::is_same_v<W, QuantizedMatrix>) part.buf.resize(R, H);
  }
  KNPROBE_PARALLEL_IF(parallel) {
    Partial<T>& part = parts[static_cast<std::size_t>(knprobe::detail::thread_num())];
    KNPROBE_FOR_STATIC
    for (Index t = 0; t < tiles; ++t)
      tile_step<T>(x, w, t * R, std::min(R, V - t * R), entries, ez, grad ? &ew : nullptr, part);
  }
  // Merge in thread order: M = max m_i, kept out by the first thread that holds it; the other
  // threads' max terms join the sums: S' = Σ_i c_i (s_i [+ 1]), A' = Σ_i c_i (a_i [+ W_k_i]),
  // c_i = exp(m_i − M).
  Vector<T> M = Vector<T>::Constant(n, neg_inf), S = Vector<T>::Zero(n);
  Matrix<T> A, WK;
  if (grad) {
    A.setZero(n, H);
    WK.resize(n, H);
  }
  std::vector<Index> K(static_cast<std::size_t>(n), -1);
  for (Index b = 0; b < n; ++b) {
    const auto bs = static_cast<std::size_t>(b);
    std::size_t keeper = 0;
    for (std::size_t i = 0; i < parts.size(); ++i)
      if (parts[i].m(b) > M(b)) {
        M(b) = parts[i].m(b);
        keeper = i;
      }
    for (std::size_t i = 0; i < parts.size(); ++i) {
      const Partial<T>& part = parts[i];
      if (part.k[bs] < 0) continue;  // a thread without tiles
      const T c = std::exp(part.m(b) - M(b));
      if (i == keeper) {
        S(b) += c * part.s(b);
        if (grad) A.row(b) += c * part.a.row(b);
      } else {
        S(b) += c * (part.s(b) + T(1));
        if (grad) A.row(b) += c * (part.a.row(b) + part.wk.row(b));
      }
    }
    K[bs] = parts[keeper].k[bs];
    if (grad) WK.row(b) = parts[keeper].wk.row(b);
  }
  // Each target (see the header): S = 1 + S', P = e_t / S, and its gradient.
  for (std::size_t v = 0; v < NV; ++v)
    for (Index b = 0; b < n; ++b) {
      const TokenId t = targets[v][static_cast<std::size_t>(b)];
      if (t < 0) continue;
      const auto it = std::lower_bound(
          entries.begin(), entries.end(), Entry{t, b},
          [](const Entry& e, const Entry& f) { return e.t != f.t ? e.t < f.t : e.b < f.b; });
      const Index i = it - entries.begin();
      const T total = T(1) + S(b), et = std::exp(ez(i) - M(b)), pt = et / total;
      prob[v](b) = pt;
      if (!grad) continue;
      if (t == K[static_cast<std::size_t>(b)])
        (*grad)[v].row(b) = (pt / total) * (S(b) * ew.row(i) - A.row(b));
      else
        (*grad)[v].row(b) = pt * (ew.row(i) - (A.row(b) + WK.row(b)) / total);
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
