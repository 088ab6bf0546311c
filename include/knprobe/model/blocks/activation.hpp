#pragma once
// Element-wise activations with their derivatives:
//   gelu_erf(x)  = x Φ(x) = 0.5 x (1 + erf(x/√2))                       (BERT "gelu")
//   gelu_tanh(x) = 0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³)))            (GPT-2 "gelu_new", Gemma)
//   silu(x)      = x σ(x)                                               (Llama)
// forward(x, y) writes act(x); backward(dy, x, dx) writes dy ⊙ act'(x).

#include <cmath>

#include "knprobe/core/eigen.hpp"  // before any other Eigen header: see the note there

#include <unsupported/Eigen/SpecialFunctions>

#include "knprobe/core/tensor.hpp"

namespace knprobe::blocks {

enum class Activation { gelu_erf, gelu_tanh, silu };

namespace detail_act {
template <class T>
constexpr T k_sqrt_2_over_pi = T(0.7978845608028654);
template <class T>
constexpr T k_gelu_cubic = T(0.044715);
}  // namespace detail_act

namespace activation {

/// y = act(x), element-wise. Shapes of x and y agree.
template <class T>
void forward(Activation act, ConstMatrixRef<T> x, Matrix<T>& y) {
  using detail_act::k_gelu_cubic;
  using detail_act::k_sqrt_2_over_pi;
  y.resize(x.rows(), x.cols());
  const auto a = x.array();
  switch (act) {
    case Activation::gelu_erf:
      y.array() = T(0.5) * a * (T(1) + (a * T(0.7071067811865476)).erf());
      break;
    case Activation::gelu_tanh:
      y.array() =
          T(0.5) * a * (T(1) + (k_sqrt_2_over_pi<T> * (a + k_gelu_cubic<T> * a * a * a)).tanh());
      break;
    case Activation::silu:
      y.array() = a / (T(1) + (-a).exp());
      break;
  }
}

/// dx = dy ⊙ act'(x) with
///   gelu_erf'(x) = Φ(x) + x φ(x);  gelu_tanh'(x) = ½(1+t) + ½x(1−t²)·c(1 + 3k x²), t =
///   tanh(c(x+kx³)); silu'(x) = σ(x)(1 + x(1 − σ(x))).
template <class T>
void backward(Activation act, ConstMatrixRef<T> dy, ConstMatrixRef<T> x, Matrix<T>& dx) {
  using detail_act::k_gelu_cubic;
  using detail_act::k_sqrt_2_over_pi;
  knprobe::detail::require_shape(dy, x.rows(), x.cols(), "activation::backward dy");
  dx.resize(x.rows(), x.cols());
  const auto a = x.array();
  switch (act) {
    case Activation::gelu_erf: {
      const T inv_sqrt_2pi = T(0.3989422804014327);
      dx.array() = dy.array() * (T(0.5) * (T(1) + (a * T(0.7071067811865476)).erf()) +
                                 a * inv_sqrt_2pi * (T(-0.5) * a * a).exp());
      break;
    }
    case Activation::gelu_tanh: {
      const auto t = (k_sqrt_2_over_pi<T> * (a + k_gelu_cubic<T> * a * a * a)).tanh().eval();
      dx.array() =
          dy.array() * (T(0.5) * (T(1) + t) + T(0.5) * a * (T(1) - t * t) * k_sqrt_2_over_pi<T> *
                                                  (T(1) + T(3) * k_gelu_cubic<T> * a * a));
      break;
    }
    case Activation::silu: {
      const auto s = (T(1) / (T(1) + (-a).exp())).eval();
      dx.array() = dy.array() * s * (T(1) + a * (T(1) - s));
      break;
    }
  }
}

}  // namespace activation
}  // namespace knprobe::blocks
