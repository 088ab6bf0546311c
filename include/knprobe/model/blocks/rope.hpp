#pragma once
// Rotary position embeddings. For head vector x at position p and pair index j < R/2 (R = rotary
// dim), angle θ_j = p · theta^(−2j/R); the pair (x_a, x_b) is rotated:
//   x_a' = x_a cos θ_j − x_b sin θ_j,   x_b' = x_b cos θ_j + x_a sin θ_j
// interleaved (llama2.c, Meta Llama): (a, b) = (2j, 2j+1); half (NEOX / HF rotate_half, Gemma):
// (a, b) = (j, j + R/2). Dimensions ≥ R pass through. Angles are computed in double.
// The map is orthogonal, so backward is the same rotation by −θ. Frequency factors f_j (Llama 3.x
// "llama3" scaling; GGUF tensor rope_freqs.weight) divide the angle: θ_j = p · theta^(−2j/R) / f_j.

#include <cmath>
#include <span>

#include "knprobe/core/tensor.hpp"

namespace knprobe::blocks::rope {

enum class Style { interleaved, half };

struct Spec {
  int n_heads = 0;
  int head_dim = 0;
  double theta = 10000.0;
  Style style = Style::half;
  int rotary_dim = 0;                         ///< 0 → head_dim
  std::span<const double> freq_factors = {};  ///< empty, or R/2 divisors of the angles
};

namespace detail {

inline int validate(const Spec& s) {
  KNPROBE_REQUIRE(s.n_heads > 0, ArgumentError, "rope: n_heads must be > 0, got ", s.n_heads);
  KNPROBE_REQUIRE(s.head_dim > 0, ArgumentError, "rope: head_dim must be > 0, got ", s.head_dim);
  const int r = s.rotary_dim == 0 ? s.head_dim : s.rotary_dim;
  KNPROBE_REQUIRE(r > 0 && r <= s.head_dim && r % 2 == 0, ArgumentError,
                  "rope: rotary_dim must be even and in (0, head_dim], got ", r);
  KNPROBE_REQUIRE(s.theta > 0.0, ArgumentError, "rope: theta must be > 0, got ", s.theta);
  KNPROBE_REQUIRE(s.freq_factors.empty() || static_cast<int>(s.freq_factors.size()) == r / 2,
                  ArgumentError, "rope: ", s.freq_factors.size(),
                  " frequency factors for a rotary dimension of ", r, " (expected ", r / 2, ")");
  for (double f : s.freq_factors)
    KNPROBE_REQUIRE(std::isfinite(f) && f > 0.0, ArgumentError,
                    "rope: frequency factors must be finite and > 0, got ", f);
  return r;
}

template <class T>
void rotate(Matrix<T>& x, std::span<const int> positions, const Spec& s, double sign) {
  const int r = validate(s);
  knprobe::detail::require_cols(x, Index(s.n_heads) * s.head_dim, "rope input");
  KNPROBE_REQUIRE(static_cast<Index>(positions.size()) == x.rows(), ShapeError,
                  "rope: expected one position per row (", x.rows(), "), got ", positions.size());
  const int half = r / 2;
  Vector<T> cs(half), sn(half);
  for (Index row = 0; row < x.rows(); ++row) {
    const int p = positions[static_cast<std::size_t>(row)];
    KNPROBE_REQUIRE(p >= 0, ArgumentError, "rope: position must be >= 0, got ", p);
    for (int j = 0; j < half; ++j) {
      double angle = p * std::pow(s.theta, -2.0 * j / r);
      if (!s.freq_factors.empty()) angle /= s.freq_factors[static_cast<std::size_t>(j)];
      cs[j] = static_cast<T>(std::cos(angle));
      sn[j] = static_cast<T>(sign * std::sin(angle));
    }
    T* base = x.row(row).data();
    for (int h = 0; h < s.n_heads; ++h) {
      T* hx = base + Index(h) * s.head_dim;
      for (int j = 0; j < half; ++j) {
        const int a = s.style == Style::interleaved ? 2 * j : j;
        const int b = s.style == Style::interleaved ? 2 * j + 1 : j + half;
        const T xa = hx[a], xb = hx[b];
        hx[a] = xa * cs[j] - xb * sn[j];
        hx[b] = xb * cs[j] + xa * sn[j];
      }
    }
  }
}

}  // namespace detail

/// Rotates x [rows × n_heads·head_dim] in place; row r is at position positions[r].
template <class T>
void forward(Matrix<T>& x, std::span<const int> positions, const Spec& s) {
  detail::rotate(x, positions, s, 1.0);
}

/// dL/dx = Rᵀ dL/dy, in place on the gradient.
template <class T>
void backward(Matrix<T>& grad, std::span<const int> positions, const Spec& s) {
  detail::rotate(grad, positions, s, -1.0);
}

}  // namespace knprobe::blocks::rope
