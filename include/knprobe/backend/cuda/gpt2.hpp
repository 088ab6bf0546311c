#pragma once
// knprobe::cuda::CudaGpt2Model: GPT-2 / mGPT with its weights on a GPU, a ProbeableModel, so that
// KnowledgeProbe<CudaGpt2Model<>> and attribute() run unchanged. Same maths as the CPU
// Gpt2Model<float, Site> (include/knprobe/model/gpt2.hpp), computed by DecoderEngine
// (src/cuda/decoder_engine.cu); link knprobe::cuda (only built when KNPROBE_HAS_CUDA). What each
// operation does on the device: backend/cuda/decoder.hpp.

#include <filesystem>

#include "knprobe/backend/cuda/decoder.hpp"
#include "knprobe/model/gpt2.hpp"

namespace knprobe::cuda {

template <NeuronSite Site = NeuronSite::post_activation>
class CudaGpt2Model : public detail::CudaDecoderBase {
  static_assert(Site == NeuronSite::post_activation || Site == NeuronSite::pre_activation,
                "GPT-2 neurons are post- or pre-activation");

 public:
  /// Uploads `w` to `device`; the host copy is not kept. Throws CudaError (naming the sizes) when
  /// the model does not fit the device.
  explicit CudaGpt2Model(const Gpt2Weights<float>& w, Precision precision = Precision::fp32,
                         int device = 0)
      : CudaDecoderBase(shape_of(w), host_pointers(w), precision, device),
        n_positions_(w.config.n_positions) {}

  /// A Hugging Face GPT-2 directory (config.json + model.safetensors).
  static CudaGpt2Model load(const std::filesystem::path& dir, Precision p = Precision::fp32,
                            int device = 0) {
    return CudaGpt2Model(load_gpt2_safetensors(dir), p, device);
  }

  int max_positions() const { return n_positions_; }

 private:
  static DecoderShape shape_of(const Gpt2Weights<float>& w) {
    w.validate();  // every tensor's shape, the config and the activation
    const auto& c = w.config;
    DecoderShape s;
    s.n_layer = c.n_layer;
    s.n_head = s.n_kv_head = c.n_head;
    s.head_dim = c.n_embd / c.n_head;
    s.d_model = c.n_embd;
    s.ffn = c.ffn_width();
    s.vocab = c.vocab_size;
    s.n_positions = c.n_positions;
    s.eps = static_cast<float>(c.layer_norm_epsilon);
    s.norm = NormKind::layer_norm;
    s.activation =
        c.activation_function == "gelu" ? ActivationKind::gelu_erf : ActivationKind::gelu_tanh;
    s.site_pre_activation = Site == NeuronSite::pre_activation;
    return s;
  }

  /// Only takes the tensors' addresses: the base constructor reads them after shape_of has
  /// validated every shape (both are its arguments).
  static DecoderHostWeights host_pointers(const Gpt2Weights<float>& w) {
    DecoderHostWeights h;
    h.embed = w.wte.data();
    h.positions = w.wpe.data();
    h.final_g = w.lnf_g.data();
    h.final_b = w.lnf_b.data();
    for (const auto& l : w.layers) {
      DecoderHostLayer x;
      x.norm1_g = l.ln1_g.data();
      x.norm1_b = l.ln1_b.data();
      x.wq = l.wq.data();
      x.wk = l.wk.data();
      x.wv = l.wv.data();
      x.wo = l.wo.data();
      x.bq = l.bq.data();
      x.bk = l.bk.data();
      x.bv = l.bv.data();
      x.bo = l.bo.data();
      x.norm2_g = l.ln2_g.data();
      x.norm2_b = l.ln2_b.data();
      x.w_fc = l.w_fc.data();
      x.b_fc = l.b_fc.data();
      x.w_down = l.w_proj.data();
      x.b_down = l.b_proj.data();
      h.layers.push_back(x);
    }
    return h;
  }

  int n_positions_;
};

}  // namespace knprobe::cuda

namespace knprobe {
template <NeuronSite Site>
struct ArchTraits<cuda::CudaGpt2Model<Site>> {
  static constexpr Objective objective = Objective::causal_lm;
  static constexpr FfnLayout ffn_layout = FfnLayout::dense;
  static constexpr NeuronSite neuron_site = Site;
};
}  // namespace knprobe
