#pragma once
// Device side of the CUDA backends (target knprobe::cuda, macro KNPROBE_HAS_CUDA): a causal
// decoder's weights resident on one GPU, every GEMM through cuBLAS, norms / activations / RoPE /
// attention / softmax as our own kernels (src/cuda/decoder_engine.cu). Plain C++ types and raw
// row-major float arrays only, so this header is usable from .cpp files compiled without nvcc and
// the .cu file never sees Eigen.
// (Pointer + count rather than std::span: CMake 3.25 compiles .cu files as C++17.)
// cuda::CudaGpt2Model (gpt2.hpp) and cuda::CudaLlamaModel (llama.hpp) are the ProbeableModels
// built on it; the maths is the CPU Gpt2Model's and LlamaModel's (include/knprobe/model/).

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

/// Normalisation of a decoder: LayerNorm with bias (GPT-2) or RMSNorm with weight only (Llama,
/// Gemma: the weight as stored, GGUF's Gemma weights already hold 1 + w).
enum class NormKind { layer_norm, rms_norm };
/// FFN activation: GELU with tanh (GPT-2 "gelu_new", Gemma), GELU with erf, SiLU (Llama).
enum class ActivationKind { gelu_tanh, gelu_erf, silu };
/// Rotary embedding layout: none (learned positions), interleaved pairs, or halves (NeoX).
enum class RopeKind { none, interleaved, half };

/// Everything that distinguishes the causal decoders knprobe runs on the GPU: GPT-2 / mGPT
/// (LayerNorm, biases, learned positions, dense FFN) and the Llama family incl. Gemma 3 (RMSNorm,
/// RoPE, grouped-query heads, gated FFN, QK-norm, sandwich norms, sliding windows, √d embedding).
struct DecoderShape {
  int n_layer = 0, n_head = 0, n_kv_head = 0, head_dim = 0, d_model = 0, ffn = 0, vocab = 0;
  int n_positions = 0;  ///< learned positions: table size; RoPE: 0 = no limit
  float eps = 1e-5f;
  NormKind norm = NormKind::layer_norm;
  ActivationKind activation = ActivationKind::gelu_tanh;
  bool gated = false;  ///< FFN act(x W_gᵀ) ⊙ (x W_uᵀ) instead of act(x W_fcᵀ + b)
  bool site_pre_activation = false;  ///< dense only: neuron = pre-activation (EleutherAI hook)
  bool qk_norm = false;              ///< RMSNorm of every query / key head
  bool sandwich_norms = false;       ///< RMSNorm of the attention and FFN outputs before the add
  float embed_scale = 1.0f;          ///< h₀ = embed_scale · E[id] (+ P[pos])
  float attn_scale = 0.0f;           ///< 0 → 1/√head_dim
  RopeKind rope = RopeKind::none;
  std::vector<double> rope_theta;  ///< per layer (RoPE only)
  std::vector<int> window;         ///< per layer: sliding window, 0 = full causal
};

/// Host pointers to one layer's row-major float weights; null where the architecture has none.
/// Dense FFN: w_fc [ffn × d] (+ b_fc), gated: w_gate and w_up [ffn × d]; w_down [d × ffn].
struct DecoderHostLayer {
  const float *norm1_g = nullptr, *norm1_b = nullptr;
  const float *wq = nullptr, *wk = nullptr, *wv = nullptr, *wo = nullptr;
  const float *bq = nullptr, *bk = nullptr, *bv = nullptr, *bo = nullptr;
  const float *q_norm = nullptr, *k_norm = nullptr, *post_attn_norm = nullptr;
  const float *norm2_g = nullptr, *norm2_b = nullptr;
  const float *w_fc = nullptr, *w_gate = nullptr, *w_up = nullptr, *w_down = nullptr;
  const float *b_fc = nullptr, *b_down = nullptr, *post_ffn_norm = nullptr;
};

/// Host pointers to a whole decoder; `positions` null without learned positions, `head` null when
/// the output head is tied to the embedding.
struct DecoderHostWeights {
  const float *embed = nullptr, *positions = nullptr, *final_g = nullptr, *final_b = nullptr;
  const float* head = nullptr;
  std::vector<DecoderHostLayer> layers;
};

/// A clean forward pass kept on the device: per layer the residual stream after attention and the
/// keys / values, plus the final normed hidden states.
class DeviceTrace;

/// One batched `layer_gradients` request: `rows` points [rows × ffn] replace the neuron vector of
/// `layer` at `position` of trace `trace` (an index into the call's traces; 0 with one trace);
/// P(target) goes to probabilities[rows], dP/dh to gradients[rows × ffn].
struct GradientRequest {
  int layer = 0, position = 0, rows = 0;
  std::int32_t target = 0;
  const float* points = nullptr;
  float* probabilities = nullptr;
  float* gradients = nullptr;
  int trace = 0;
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

/// One prompt of the multi-prompt `probabilities`: tokens [offset, offset + n) of the call's token
/// array, patterns [pattern0, pattern0 + patterns) and queries [query0, query0 + queries) of the
/// call's lists (prompts in order: each range starts where the previous prompt's ends).
struct DevicePrompt {
  int offset = 0, n = 0, pattern0 = 0, patterns = 0, query0 = 0, queries = 0;
};

/// A causal decoder on one GPU. Not safe to call from two threads at once (one stream, one
/// workspace).
class DecoderEngine {
 public:
  /// Uploads the weights to `device`. Refuses (CudaError naming the sizes) when the weights plus a
  /// working margin do not fit the device's free memory.
  DecoderEngine(const DecoderShape& shape, const DecoderHostWeights& weights, int device = 0);
  ~DecoderEngine();
  DecoderEngine(DecoderEngine&&) noexcept;
  DecoderEngine& operator=(DecoderEngine&&) noexcept;
  DecoderEngine(const DecoderEngine&) = delete;
  DecoderEngine& operator=(const DecoderEngine&) = delete;

  const DecoderShape& shape() const;
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

  /// The same over several traces (facts) at once: request r recomputes its position of
  /// traces[r.trace] against that trace's cached keys / values; the rows of all traces share
  /// every layer's GEMMs and one head GEMM. Each result equals the call on its trace alone up to
  /// the rounding of a GEMM over more rows.
  void layer_gradients(const DeviceTrace* const* traces, int n_traces,
                       const GradientRequest* requests, int count);

  /// out[pattern × queries] = P(query.target at query.position) under each pattern's
  /// interventions; one batched pass from the lowest intervened layer and position.
  void probabilities(const DeviceTrace& trace, int patterns,
                     const std::vector<DeviceIntervention>& interventions,
                     const std::vector<DeviceQuery>& queries, float* out);

  /// Several prompts at once: out holds, prompt after prompt, each prompt's [patterns × queries]
  /// block of P(query.target at query.position) under the pattern's interventions
  /// (DeviceIntervention::pattern indexes all prompts' patterns). Every (prompt, pattern) is run
  /// from the embedding as its own sequence, up to the prompt's last query position; all sequences
  /// are stacked into one forward (groups of about 4096 rows), so a fact, its controls and its
  /// unrelated facts share every layer's GEMMs and one head GEMM. Needs no trace. ArgumentError
  /// naming the prompt for a bad id, length, position, layer or unit, before any work.
  void probabilities(const std::int32_t* tokens, const std::vector<DevicePrompt>& prompts,
                     const std::vector<DeviceIntervention>& interventions,
                     const std::vector<DeviceQuery>& queries, float* out);

  /// Column `unit` of layer `layer`'s W_down [d_model × ffn]: the value vector (d_model floats).
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
