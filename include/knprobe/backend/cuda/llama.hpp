#pragma once
// knprobe::cuda::CudaLlamaModel: the Llama family (Llama 2 / llama2.c, Gemma 3) with its weights
// on a GPU, a ProbeableModel. Same maths as the CPU LlamaModel<float>
// (include/knprobe/model/llama.hpp): RMSNorm, RoPE (interleaved or halves, a base per layer),
// grouped-query attention with sliding windows, gated FFN (neuron = act(x W_gᵀ) ⊙ x W_uᵀ), and
// Gemma 3's QK-norm, sandwich norms and √d input embedding; computed by DecoderEngine
// (src/cuda/decoder_engine.cu). What each operation does on the device: backend/cuda/decoder.hpp.

#include <filesystem>

#include "knprobe/backend/cuda/decoder.hpp"
#include "knprobe/model/llama_weights.hpp"

namespace knprobe::cuda {

class CudaLlamaModel : public detail::CudaDecoderBase {
 public:
  /// Uploads `w` to `device`; the host copy is not kept. Throws CudaError (naming the sizes) when
  /// the model does not fit the device.
  explicit CudaLlamaModel(const LlamaWeights<float>& w, Precision precision = Precision::fp32,
                          int device = 0)
      : CudaDecoderBase(shape_of(w), host_pointers(w), precision, device), spec_(w.spec) {}

  /// A .gguf file, a llama2.c .bin checkpoint, or a Hugging Face directory (as LlamaModel::load).
  static CudaLlamaModel load(const std::filesystem::path& path, Precision p = Precision::fp32,
                             int device = 0) {
    if (std::filesystem::is_directory(path))
      return CudaLlamaModel(load_llama_safetensors(path), p, device);
    if (path.extension() == ".gguf")
      return CudaLlamaModel(load_llama_gguf(io::GgufFile(path)), p, device);
    return CudaLlamaModel(load_llama2c(path), p, device);
  }

  const LlamaSpec& spec() const { return spec_; }

 private:
  static DecoderShape shape_of(const LlamaWeights<float>& w) {
    w.validate();
    const auto& s = w.spec;
    DecoderShape d;
    d.n_layer = s.layers;
    d.n_head = s.heads;
    d.n_kv_head = s.kv_heads;
    d.head_dim = s.head_dim;
    d.d_model = s.hidden;
    d.ffn = s.ffn;
    d.vocab = s.vocab_size;
    d.n_positions = 0;
    d.eps = static_cast<float>(s.norm_eps);
    d.norm = NormKind::rms_norm;
    switch (s.activation) {
      case blocks::Activation::gelu_erf:
        d.activation = ActivationKind::gelu_erf;
        break;
      case blocks::Activation::gelu_tanh:
        d.activation = ActivationKind::gelu_tanh;
        break;
      default:
        d.activation = ActivationKind::silu;
        break;
    }
    KNPROBE_REQUIRE(!s.qkv_bias && s.rope_freq_factors.empty(), ArgumentError, "cuda: ", s.family(),
                    ": q/k/v biases (Qwen 2) and RoPE frequency factors (Llama 3.x) are not "
                    "implemented on the GPU; use the CPU model");
    d.gated = true;
    d.qk_norm = s.qk_norm;
    d.sandwich_norms = s.sandwich_norms;
    d.embed_scale = static_cast<float>(s.embed_scale);
    d.attn_scale = static_cast<float>(s.attention_scale());
    d.rope =
        s.rope_style == blocks::rope::Style::interleaved ? RopeKind::interleaved : RopeKind::half;
    for (int l = 0; l < s.layers; ++l) {
      d.rope_theta.push_back(s.theta(l));
      d.window.push_back(s.is_sliding(l) ? s.sliding_window : 0);
    }
    return d;
  }

  static DecoderHostWeights host_pointers(const LlamaWeights<float>& w) {
    DecoderHostWeights h;
    h.embed = w.embed.data();
    h.final_g = w.final_norm.data();
    h.head = w.lm_head ? w.lm_head->data() : nullptr;
    for (const auto& l : w.layers) {
      DecoderHostLayer x;
      x.norm1_g = l.attn_norm.data();
      x.wq = l.wq.data();
      x.wk = l.wk.data();
      x.wv = l.wv.data();
      x.wo = l.wo.data();
      if (w.spec.qk_norm) {
        x.q_norm = l.q_norm.data();
        x.k_norm = l.k_norm.data();
      }
      if (w.spec.sandwich_norms) {
        x.post_attn_norm = l.post_attn_norm.data();
        x.post_ffn_norm = l.post_ffn_norm.data();
      }
      x.norm2_g = l.ffn_norm.data();
      x.w_gate = l.w_gate.data();
      x.w_up = l.w_up.data();
      x.w_down = l.w_down.data();
      h.layers.push_back(x);
    }
    return h;
  }

  LlamaSpec spec_;
};

}  // namespace knprobe::cuda

namespace knprobe {
template <>
struct ArchTraits<cuda::CudaLlamaModel> {
  static constexpr Objective objective = Objective::causal_lm;
  static constexpr FfnLayout ffn_layout = FfnLayout::gated;
  static constexpr NeuronSite neuron_site = NeuronSite::gated_product;
};
}  // namespace knprobe
