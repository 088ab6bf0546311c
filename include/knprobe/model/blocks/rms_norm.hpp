#pragma once
// RMSNorm over the feature axis: y = x · r ⊙ w_eff with r = 1/sqrt(mean(x²) + eps).
// w_eff = w (Llama, llama.cpp, and Gemma weights read from GGUF, which already hold 1 + w) or
// 1 + w (Gemma weights read from Hugging Face safetensors, stored zero-centred).

#include <cmath>

#include "knprobe/core/tensor.hpp"

namespace knprobe::blocks::rms_norm {

/// How the stored weight enters: `plain` → w, `offset_one` → 1 + w (Gemma's HF form).
enum class WeightForm { plain, offset_one };

/// What backward needs: r per row.
template <class T>
struct Cache {
  Vector<T> rstd;
};

/// The effective per-feature scale for a stored weight.
template <class T>
Vector<T> effective_weight(ConstVectorRef<T> w, WeightForm form) {
  return form == WeightForm::plain ? Vector<T>(w) : Vector<T>(w.array() + T(1));
}

/// y = x · r ⊙ w_eff. x [n × d], w [d]. Fills `cache`.
template <class T>
void forward(ConstMatrixRef<T> x, ConstVectorRef<T> w, T eps, WeightForm form, Matrix<T>& y,
             Cache<T>& cache) {
  detail::require_size(w, x.cols(), "rms_norm::forward weight");
  KNPROBE_REQUIRE(eps >= T(0), ArgumentError, "rms_norm::forward eps must be >= 0, got ", eps);
  const Vector<T> we = effective_weight<T>(w, form);
  const T inv_d = T(1) / static_cast<T>(x.cols());
  cache.rstd.resize(x.rows());
  y.resize(x.rows(), x.cols());
  for (Index r = 0; r < x.rows(); ++r) {
    const T rstd = T(1) / std::sqrt(x.row(r).squaredNorm() * inv_d + eps);
    cache.rstd[r] = rstd;
    y.row(r) = (x.row(r) * rstd).cwiseProduct(we.transpose());
  }
}

/// dL/dx = r · g − x · r³ · mean(g ⊙ x) with g = dL/dy ⊙ w_eff. Needs the forward input x.
template <class T>
void backward(ConstMatrixRef<T> dy, ConstMatrixRef<T> x, ConstVectorRef<T> w, WeightForm form,
              const Cache<T>& cache, Matrix<T>& dx) {
  detail::require_shape(dy, x.rows(), x.cols(), "rms_norm::backward dy");
  detail::require_size(cache.rstd, x.rows(), "rms_norm::backward cache");
  const Vector<T> we = effective_weight<T>(w, form);
  const T inv_d = T(1) / static_cast<T>(x.cols());
  dx.resize(x.rows(), x.cols());
  for (Index r = 0; r < x.rows(); ++r) {
    const T rs = cache.rstd[r];
    const auto g = dy.row(r).cwiseProduct(we.transpose());
    const T mean_gx = g.dot(x.row(r)) * inv_d;
    dx.row(r) = rs * g - (rs * rs * rs * mean_gx) * x.row(r);
  }
}

}  // namespace knprobe::blocks::rms_norm
