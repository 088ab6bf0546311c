#pragma once
// Scaled dot-product attention with grouped-query heads, causal / bidirectional masks and sliding
// windows, batched over sequences:
//   S = scale · Q_h K_gᵀ + M,  P = softmax_rows(S),  O_h = P V_g,   g = h / (n_heads / n_kv_heads)
// Q rows of sequence b are queries at absolute positions q_offset .. q_offset + q_len − 1; K/V rows
// are keys at positions 0 .. kv_len − 1 (so a cached prefix plus recomputed rows is one call).
// Mask M: causal → key k visible from query q iff k ≤ q; window w → additionally q − k < w
// (|q − k| < w when bidirectional). Hidden entries get probability exactly 0.

#include <limits>
#include <optional>

#include "knprobe/core/parallel.hpp"
#include "knprobe/core/tensor.hpp"

namespace knprobe::blocks::attention {

enum class Mask { bidirectional, causal };

/// Shapes and masking of one attention call. Q is [batch·q_len × n_heads·head_dim], K and V are
/// [batch·kv_len × n_kv_heads·head_dim], O is shaped like Q.
struct Shape {
  int batch = 1;
  int q_len = 0;
  int kv_len = 0;
  int q_offset = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  Mask mask = Mask::causal;
  std::optional<int> window;  ///< sliding window size, > 0 when set
  double scale = 1.0;         ///< multiplies q·k (usually 1/sqrt(head_dim))
};

/// Attention probabilities per (sequence, head): rows (b·n_heads + h)·q_len + i, kv_len columns.
template <class T>
struct Cache {
  Matrix<T> probs;
};

namespace detail {

inline void validate(const Shape& s) {
  KNPROBE_REQUIRE(s.batch > 0, ArgumentError, "attention: batch must be > 0, got ", s.batch);
  KNPROBE_REQUIRE(s.q_len > 0, ArgumentError, "attention: q_len must be > 0, got ", s.q_len);
  KNPROBE_REQUIRE(s.kv_len > 0, ArgumentError, "attention: kv_len must be > 0, got ", s.kv_len);
  KNPROBE_REQUIRE(s.n_heads > 0, ArgumentError, "attention: n_heads must be > 0, got ", s.n_heads);
  KNPROBE_REQUIRE(s.n_kv_heads > 0, ArgumentError, "attention: n_kv_heads must be > 0, got ",
                  s.n_kv_heads);
  KNPROBE_REQUIRE(s.n_heads % s.n_kv_heads == 0, ArgumentError, "attention: n_heads (", s.n_heads,
                  ") must be a multiple of n_kv_heads (", s.n_kv_heads, ")");
  KNPROBE_REQUIRE(s.head_dim > 0, ArgumentError, "attention: head_dim must be > 0, got ",
                  s.head_dim);
  KNPROBE_REQUIRE(!s.window || *s.window > 0, ArgumentError,
                  "attention: window must be > 0 when set, got ", s.window.value_or(0));
  KNPROBE_REQUIRE(s.q_offset >= 0, ArgumentError, "attention: q_offset must be >= 0, got ",
                  s.q_offset);
  // Queries are positions among the keys, so every query sees at least its own key.
  KNPROBE_REQUIRE(s.q_offset + s.q_len <= s.kv_len, ArgumentError,
                  "attention: queries up to position ", s.q_offset + s.q_len - 1,
                  " need keys up to there, but kv_len is ", s.kv_len);
}

inline bool visible(const Shape& s, int q_pos, int k_pos) {
  if (s.mask == Mask::causal && k_pos > q_pos) return false;
  if (s.window) {
    const int dist = q_pos >= k_pos ? q_pos - k_pos : k_pos - q_pos;
    if (dist >= *s.window) return false;
  }
  return true;
}

}  // namespace detail

/// O = softmax(scale · Q Kᵀ + M) V per head (see file comment). Fills `cache` for backward.
template <class T>
void forward(ConstMatrixRef<T> q, ConstMatrixRef<T> k, ConstMatrixRef<T> v, const Shape& s,
             Matrix<T>& out, Cache<T>& cache) {
  detail::validate(s);
  const Index dh = s.head_dim;
  knprobe::detail::require_shape(q, Index(s.batch) * s.q_len, Index(s.n_heads) * dh,
                                 "attention::forward q");
  knprobe::detail::require_shape(k, Index(s.batch) * s.kv_len, Index(s.n_kv_heads) * dh,
                                 "attention::forward k");
  knprobe::detail::require_shape(v, Index(s.batch) * s.kv_len, Index(s.n_kv_heads) * dh,
                                 "attention::forward v");
  out.resize(q.rows(), q.cols());
  cache.probs.resize(Index(s.batch) * s.n_heads * s.q_len, s.kv_len);
  const int group = s.n_heads / s.n_kv_heads;
  const T scale = static_cast<T>(s.scale);
  const int jobs = s.batch * s.n_heads;
  KNPROBE_PARALLEL_FOR_IF(jobs > 1 && Index(jobs) * s.q_len * s.kv_len * dh > 32768)
  for (int job = 0; job < jobs; ++job) {
    const int b = job / s.n_heads, h = job % s.n_heads, g = h / group;
    const auto qh = q.block(Index(b) * s.q_len, h * dh, s.q_len, dh);
    const auto kg = k.block(Index(b) * s.kv_len, g * dh, s.kv_len, dh);
    const auto vg = v.block(Index(b) * s.kv_len, g * dh, s.kv_len, dh);
    auto p = cache.probs.middleRows(Index(job) * s.q_len, s.q_len);
    p.noalias() = (qh * kg.transpose()) * scale;
    for (int i = 0; i < s.q_len; ++i) {
      T mx = -std::numeric_limits<T>::infinity();
      for (int j = 0; j < s.kv_len; ++j)
        if (detail::visible(s, s.q_offset + i, j)) mx = std::max(mx, p(i, j));
      T sum = 0;
      for (int j = 0; j < s.kv_len; ++j) {
        const T e = detail::visible(s, s.q_offset + i, j) ? std::exp(p(i, j) - mx) : T(0);
        p(i, j) = e;
        sum += e;
      }
      p.row(i) /= sum;
    }
    out.block(Index(b) * s.q_len, h * dh, s.q_len, dh).noalias() = p * vg;
  }
}

/// Gradients of the inputs from dL/dO:
///   dV_g = Σ_h Pᵀ dO_h,  dS = P ⊙ (dO_h V_gᵀ − rowsum(P ⊙ dO_h V_gᵀ)),
///   dQ_h = scale · dS K_g,  dK_g = Σ_h scale · dSᵀ Q_h.
template <class T>
void backward(ConstMatrixRef<T> dout, ConstMatrixRef<T> q, ConstMatrixRef<T> k, ConstMatrixRef<T> v,
              const Shape& s, const Cache<T>& cache, Matrix<T>& dq, Matrix<T>& dk, Matrix<T>& dv) {
  detail::validate(s);
  const Index dh = s.head_dim;
  knprobe::detail::require_shape(dout, q.rows(), q.cols(), "attention::backward dout");
  knprobe::detail::require_shape(cache.probs, Index(s.batch) * s.n_heads * s.q_len, s.kv_len,
                                 "attention::backward cache");
  dq.resize(q.rows(), q.cols());
  dk.setZero(k.rows(), k.cols());
  dv.setZero(v.rows(), v.cols());
  const int group = s.n_heads / s.n_kv_heads;
  const T scale = static_cast<T>(s.scale);
  const int jobs = s.batch * s.n_kv_heads;  // one job per K/V head: no write races on dK, dV
  KNPROBE_PARALLEL_FOR_IF(jobs > 1 && Index(jobs) * group * s.q_len * s.kv_len * dh > 32768)
  for (int job = 0; job < jobs; ++job) {
    const int b = job / s.n_kv_heads, g = job % s.n_kv_heads;
    const auto kg = k.block(Index(b) * s.kv_len, g * dh, s.kv_len, dh);
    const auto vg = v.block(Index(b) * s.kv_len, g * dh, s.kv_len, dh);
    auto dkg = dk.block(Index(b) * s.kv_len, g * dh, s.kv_len, dh);
    auto dvg = dv.block(Index(b) * s.kv_len, g * dh, s.kv_len, dh);
    Matrix<T> ds(s.q_len, s.kv_len);
    for (int h = g * group; h < (g + 1) * group; ++h) {
      const auto p = cache.probs.middleRows((Index(b) * s.n_heads + h) * s.q_len, s.q_len);
      const auto doh = dout.block(Index(b) * s.q_len, h * dh, s.q_len, dh);
      const auto qh = q.block(Index(b) * s.q_len, h * dh, s.q_len, dh);
      dvg.noalias() += p.transpose() * doh;
      ds.noalias() = doh * vg.transpose();
      for (int i = 0; i < s.q_len; ++i) {
        const T dot = ds.row(i).dot(p.row(i));
        ds.row(i) = p.row(i).cwiseProduct((ds.row(i).array() - dot).matrix());
      }
      dq.block(Index(b) * s.q_len, h * dh, s.q_len, dh).noalias() = (ds * kg) * scale;
      dkg.noalias() += (ds.transpose() * qh) * scale;
    }
  }
}

}  // namespace knprobe::blocks::attention
