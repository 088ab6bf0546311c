#pragma once
// Device side of the CUDA GPT-2 backend (target knprobe::cuda, macro KNPROBE_HAS_CUDA): weights
// resident on one GPU, every GEMM through cuBLAS, norms / activations / attention / softmax as our
// own kernels (src/cuda/gpt2_engine.cu). Plain C++ types and raw row-major float arrays only, so
// this header is usable from .cpp files compiled without nvcc and the .cu file never sees Eigen.
// (Pointer + count rather than std::span: CMake 3.25 compiles .cu files as C++17.)
// knprobe::cuda::CudaGpt2Model (gpt2.hpp) is the ProbeableModel built on it; the maths of every
// operation is the CPU Gpt2Model's (include/knprobe/model/gpt2.hpp).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "knprobe/backend/cuda/device.hpp"

namespace knprobe::cuda {

/// Arithmetic of the GEMMs. fp32: IEEE single precision throughout (the default, the one the
/// parity tests hold to 1e-4). tf32: cuBLAS rounds the GEMM inputs to TF32 on tensor cores
/// (CUBLAS_COMPUTE_32F_FAST_TF32). bf16: GEMMs read BF16 copies of the weights (made on first
/// use, half the memory traffic) and BF16-rounded activations. Both accumulate in FP32 and write
/// FP32; our own kernels (norms, attention, softmax) stay FP32.
enum class Precision { fp32, tf32, bf16 };

/// "fp32", "tf32", "bf16".
const char* precision_name(Precision p) noexcept;
/// Inverse of precision_name; throws ArgumentError naming the accepted values.
Precision parse_precision(const std::string& name);

/// Sizes of a GPT-2 model and the choices the CPU model makes at compile time.
struct Gpt2Shape {
  int n_layer = 0, n_head = 0, d_model = 0, ffn = 0, vocab = 0, n_positions = 0;
  float eps = 1e-5f;
  bool gelu_erf = false;             ///< "gelu" (erf) instead of "gelu_new" (tanh)
  bool site_pre_activation = false;  ///< neuron site z = f W_fcᵀ + b_fc instead of gelu(z)
};

/// Host pointers to one layer's row-major weights, laid out as Gpt2LayerWeights<float>.
struct Gpt2HostLayer {
  const float *ln1_g, *ln1_b, *wq, *wk, *wv, *wo, *bq, *bk, *bv, *bo;
  const float *ln2_g, *ln2_b, *w_fc, *w_proj, *b_fc, *b_proj;
};

/// Host pointers to a whole model's row-major weights, laid out as Gpt2Weights<float>.
struct Gpt2HostWeights {
  const float *wte, *wpe, *lnf_g, *lnf_b;
  std::vector<Gpt2HostLayer> layers;
};

/// A clean forward pass kept on the device: per layer the residual stream after attention and the
/// keys / values, plus the final normed hidden states.
class DeviceTrace;

/// One batched `layer_gradients` request: `rows` points [rows × ffn] replace the neuron vector of
/// `layer` at `position`; P(target) goes to probabilities[rows], dP/dh to gradients[rows × ffn].
struct GradientRequest {
  int layer = 0, position = 0, rows = 0;
  std::int32_t target = 0;
  const float* points = nullptr;
  float* probabilities = nullptr;
  float* gradients = nullptr;
};

/// One activation change of `probabilities`: pattern `pattern`, layer, position, unit; op 0 sets
/// h = value, op 1 scales h = value · h. Changes of one pattern apply in the order given.
struct DeviceIntervention {
  int pattern = 0, layer = 0, position = 0, unit = 0, op = 0;
  float value = 0.0f;
};

/// One query of `probabilities`: P(target) at position.
struct DeviceQuery {
  int position = 0;
  std::int32_t target = 0;
};

/// GPT-2 on one GPU. Not safe to call from two threads at once (one stream, one workspace).
class Gpt2Engine {
 public:
  /// Uploads the weights to `device`. Refuses (CudaError naming the sizes) when the weights plus a
  /// working margin do not fit the device's free memory.
  Gpt2Engine(const Gpt2Shape& shape, const Gpt2HostWeights& weights, int device = 0);
  ~Gpt2Engine();
  Gpt2Engine(Gpt2Engine&&) noexcept;
  Gpt2Engine& operator=(Gpt2Engine&&) noexcept;
  Gpt2Engine(const Gpt2Engine&) = delete;
  Gpt2Engine& operator=(const Gpt2Engine&) = delete;

  const Gpt2Shape& shape() const;
  void set_precision(Precision p);
  Precision precision() const;
  /// Bytes of device memory the weights take.
  std::size_t weight_bytes() const;
  /// The device's name, e.g. "NVIDIA H100 80GB HBM3".
  std::string device_name() const;

  /// Clean forward pass over `tokens`; writes the neuron-site activations of every layer to
  /// `acts` [n_layer × n × ffn] (row-major, layer-major) and keeps what later calls reuse.
  std::shared_ptr<const DeviceTrace> trace(const std::int32_t* tokens, int n, float* acts);

  /// AMIG baselines in one batched forward: `count` prompts of `n` tokens each (row-major
  /// tokens [count × n]); out [n_layer × npos × ffn] = mean over the prompts of the neuron-site
  /// activation of every layer at each of `positions`.
  void mean_site_activations(const std::int32_t* tokens, int count, int n, const int* positions,
                             int npos, float* out);

  /// Logits of every traced position: out [n × vocab] = final_hidden wteᵀ.
  void logits(const DeviceTrace& trace, float* out);

  /// P(target) and dP/dh for every request (layers ≥ request.layer recompute the request's
  /// position only, against the trace's cached keys / values); all rows share one head GEMM.
  void layer_gradients(const DeviceTrace& trace, const GradientRequest* requests, int count);

  /// out[pattern × queries] = P(query.target at query.position) under each pattern's
  /// interventions; one batched pass from the lowest intervened layer and position.
  void probabilities(const DeviceTrace& trace, int patterns,
                     const std::vector<DeviceIntervention>& interventions,
                     const std::vector<DeviceQuery>& queries, float* out);

  /// Column `unit` of layer `layer`'s W_proj [d_model × ffn]: the value vector (d_model floats).
  void value_column(int layer, int unit, float* out) const;
  void set_value_column(int layer, int unit, const float* v);
  /// Row `id` of the token embedding (d_model floats).
  void embedding_row(std::int32_t id, float* out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Device memory in bytes: {free, total} of `device`.
std::pair<std::size_t, std::size_t> memory_info(int device = 0);

/// Allocates `bytes` of device memory and frees it at once: throws CudaError naming the size when
/// the device cannot provide it (used by tests of the out-of-memory message).
void probe_allocation(std::size_t bytes, int device = 0);

}  // namespace knprobe::cuda
