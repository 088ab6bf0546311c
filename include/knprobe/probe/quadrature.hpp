#pragma once
// Quadrature rules for the integrated-gradients path integral ∫₀¹ g(α) dα ≈ Σ_k w_k g(α_k).
//   left Riemann (Dai, the reference code): α_k = k/m, w_k = 1/m, k = 0..m−1
//   trapezoid: α_k = k/m, k = 0..m, w = 1/m with halved end weights
//   Gauss–Legendre: m nodes, exact for polynomials of degree ≤ 2m − 1.
//   linspace (EleutherAI knowledge-neurons): α_k = k/(m−1), k = 0..m−1, w_k = 1/m — both end
//   points with full weight, so Σ w_k = 1 but the rule is biased by (g(1) − g(0))/(2m) + O(1/m²);
//   offered only to reproduce that reference (m = 1 → α = 0).

#include <cmath>
#include <vector>

#include "knprobe/core/error.hpp"

namespace knprobe {

enum class Quadrature { left_riemann, trapezoid, gauss_legendre, linspace };

struct QuadratureRule {
  std::vector<double> nodes, weights;
};

/// The rule with m steps on [0, 1]. @pre m ≥ 1 (≥ 1 interval for the trapezoid).
inline QuadratureRule quadrature_rule(Quadrature q, int m) {
  KNPROBE_REQUIRE(m >= 1 && m <= 100000, ArgumentError, "quadrature: steps m = ", m,
                  " must be in [1, 100000]");
  QuadratureRule r;
  switch (q) {
    case Quadrature::left_riemann:
      for (int k = 0; k < m; ++k) {
        r.nodes.push_back(double(k) / m);
        r.weights.push_back(1.0 / m);
      }
      break;
    case Quadrature::trapezoid:
      for (int k = 0; k <= m; ++k) {
        r.nodes.push_back(double(k) / m);
        r.weights.push_back((k == 0 || k == m) ? 0.5 / m : 1.0 / m);
      }
      break;
    case Quadrature::linspace:
      for (int k = 0; k < m; ++k) {
        r.nodes.push_back(m == 1 ? 0.0 : double(k) / (m - 1));
        r.weights.push_back(1.0 / m);
      }
      break;
    case Quadrature::gauss_legendre: {
      // Roots of P_m by Newton's method from Chebyshev guesses; mapped from [−1, 1] to [0, 1].
      const double pi = 3.141592653589793;
      for (int i = 0; i < m; ++i) {
        double x = std::cos(pi * (i + 0.75) / (m + 0.5)), dp = 1.0;
        for (int it = 0; it < 100; ++it) {
          double p0 = 1.0, p1 = x;
          for (int n = 2; n <= m; ++n) {
            const double p2 = ((2.0 * n - 1.0) * x * p1 - (n - 1.0) * p0) / n;
            p0 = p1;
            p1 = p2;
          }
          if (m == 1) p1 = x, p0 = 1.0;
          dp = m * (x * p1 - p0) / (x * x - 1.0);
          const double dx = p1 / dp;
          x -= dx;
          if (std::abs(dx) < 1e-15) break;
        }
        r.nodes.push_back(0.5 * (1.0 - x));
        r.weights.push_back(1.0 / ((1.0 - x * x) * dp * dp));
      }
      break;
    }
  }
  return r;
}

}  // namespace knprobe
