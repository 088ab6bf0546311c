#pragma once
// knprobe::cuda::CudaGpt2Model: GPT-2 with its weights on a GPU, a ProbeableModel, so that
// KnowledgeProbe<CudaGpt2Model<>> and attribute() run unchanged. Same maths as the CPU
// Gpt2Model<float, Site> (include/knprobe/model/gpt2.hpp), computed by Gpt2Engine
// (src/cuda/gpt2_engine.cu); link knprobe::cuda (only built when KNPROBE_HAS_CUDA).
//   trace:            one forward pass on the device; the neuron-site activations come back to the
//                     host, residual stream and keys / values stay on the device for reuse.
//   layer_gradients:  every request of a call in one pass: rows of all layers' requests share the
//                     GEMMs of the layers above them and one output-head GEMM (forward and back);
//                     each row recomputes its own position only, against the cached keys / values.
//   probabilities:    one batched pass over the patterns from the lowest intervened layer.
//   value vectors:    read / written on the device; set_value_vector restores bit-exactly.

#include <filesystem>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "knprobe/backend/cuda/gpt2_engine.hpp"
#include "knprobe/model/concept.hpp"
#include "knprobe/model/gpt2.hpp"

namespace knprobe::cuda {

template <NeuronSite Site = NeuronSite::post_activation>
class CudaGpt2Model {
  static_assert(Site == NeuronSite::post_activation || Site == NeuronSite::pre_activation,
                "GPT-2 neurons are post- or pre-activation");

 public:
  using Scalar = float;

  struct Trace {
    std::vector<TokenId> tokens;
    std::vector<MatrixF> acts;  ///< [L] each [T × ffn], on the host
    std::shared_ptr<const DeviceTrace> device;
    ConstMatrixRef<float> activations(int layer) const {
      return acts.at(static_cast<std::size_t>(layer));
    }
    int num_tokens() const { return static_cast<int>(tokens.size()); }
  };

  /// Uploads `w` to `device`; the host copy is not kept. Throws CudaError (naming the sizes) when
  /// the model does not fit the device.
  explicit CudaGpt2Model(const Gpt2Weights<float>& w, Precision precision = Precision::fp32,
                         int device = 0)
      : config_(w.config),
        engine_(std::make_unique<Gpt2Engine>(shape_of(w.config), host_pointers(w), device)),
        mutex_(std::make_unique<std::mutex>()) {
    engine_->set_precision(precision);
  }

  /// A Hugging Face GPT-2 directory (config.json + model.safetensors).
  static CudaGpt2Model load(const std::filesystem::path& dir, Precision p = Precision::fp32,
                            int device = 0) {
    return CudaGpt2Model(load_gpt2_safetensors(dir), p, device);
  }

  int num_layers() const { return config_.n_layer; }
  int ffn_width() const { return config_.ffn_width(); }
  int hidden_size() const { return config_.n_embd; }
  int vocab_size() const { return config_.vocab_size; }
  int max_positions() const { return config_.n_positions; }
  Precision precision() const { return engine_->precision(); }
  void set_precision(Precision p) { engine_->set_precision(p); }
  const Gpt2Engine& engine() const { return *engine_; }

  Trace trace(std::span<const TokenId> tokens) const {
    const std::lock_guard lock(*mutex_);
    Trace t;
    t.tokens.assign(tokens.begin(), tokens.end());
    const Index n = static_cast<Index>(tokens.size()), F = ffn_width();
    std::vector<float> acts(static_cast<std::size_t>(num_layers() * n * F));
    t.device = engine_->trace(tokens.data(), static_cast<int>(n), acts.data());
    for (int l = 0; l < num_layers(); ++l)
      t.acts.push_back(Eigen::Map<const MatrixF>(acts.data() + Index(l) * n * F, n, F));
    return t;
  }

  /// AMIG baselines as one batched forward: result[l] [positions × ffn] = mean over `prompts`
  /// (all of one length) of the layer-l neuron-site activation at each position.
  std::vector<MatrixF> mean_site_activations(std::span<const std::vector<TokenId>> prompts,
                                             std::span<const int> positions) const {
    KNPROBE_REQUIRE(!prompts.empty(), ArgumentError, "mean_site_activations: no prompts");
    const std::size_t n = prompts[0].size();
    std::vector<TokenId> flat;
    for (const auto& p : prompts) {
      KNPROBE_REQUIRE(p.size() == n, ArgumentError,
                      "mean_site_activations: prompts of different lengths (", p.size(), " and ", n,
                      ")");
      flat.insert(flat.end(), p.begin(), p.end());
    }
    const Index np = static_cast<Index>(positions.size()), F = ffn_width();
    std::vector<float> out(static_cast<std::size_t>(num_layers() * np * F));
    {
      const std::lock_guard lock(*mutex_);
      engine_->mean_site_activations(flat.data(), static_cast<int>(prompts.size()),
                                     static_cast<int>(n), positions.data(), static_cast<int>(np),
                                     out.data());
    }
    std::vector<MatrixF> r;
    for (int l = 0; l < num_layers(); ++l)
      r.push_back(Eigen::Map<const MatrixF>(out.data() + Index(l) * np * F, np, F));
    return r;
  }

  /// Logits [T × V] of the trace's positions.
  MatrixF logits(const Trace& t) const {
    MatrixF z(t.num_tokens(), vocab_size());
    const std::lock_guard lock(*mutex_);
    engine_->logits(*t.device, z.data());
    return z;
  }

  /// P(target at p) and dP/dh for h = each row of `points` replacing the layer-l neuron vector.
  LayerGradients<float> layer_gradients(const Trace& t, int layer, int position,
                                        const MatrixF& points, TokenId target) const {
    const LayerRequest<float> r{layer, position, points, target};
    return std::move(layer_gradients(t, std::span<const LayerRequest<float>>(&r, 1))[0]);
  }

  /// Several requests in one device pass (at most k_rows_per_pass points per pass).
  std::vector<LayerGradients<float>> layer_gradients(
      const Trace& t, std::span<const LayerRequest<float>> reqs) const {
    std::vector<LayerGradients<float>> out(reqs.size());
    for (const auto& q : reqs) {
      knprobe::detail::require_cols(q.points, ffn_width(), "layer_gradients points");
      KNPROBE_REQUIRE(q.points.rows() > 0, ArgumentError, "layer_gradients: no points");
    }
    const std::lock_guard lock(*mutex_);
    knprobe::detail::for_each_request_chunk(
        reqs, k_rows_per_pass, [&](std::size_t begin, std::size_t n) {
          std::vector<GradientRequest> dev;
          for (std::size_t i = begin; i < begin + n; ++i) {
            const auto& q = reqs[i];
            auto& o = out[i];
            o.probabilities.resize(q.points.rows());
            o.gradients.resize(q.points.rows(), ffn_width());
            dev.push_back({q.layer, q.position, static_cast<int>(q.points.rows()), q.target,
                           q.points.data(), o.probabilities.data(), o.gradients.data()});
          }
          engine_->layer_gradients(*t.device, dev.data(), static_cast<int>(dev.size()));
        });
    return out;
  }

  Matrix<float> probabilities(std::span<const TokenId> tokens,
                              std::span<const InterventionPattern> patterns,
                              std::span<const Query> queries) const {
    return probabilities(trace(tokens), patterns, queries);
  }

  /// [patterns × queries] probabilities under each pattern's interventions.
  Matrix<float> probabilities(const Trace& t, std::span<const InterventionPattern> patterns,
                              std::span<const Query> queries) const {
    std::vector<DeviceIntervention> ivs;
    for (std::size_t b = 0; b < patterns.size(); ++b)
      for (const auto& iv : patterns[b])
        ivs.push_back({static_cast<int>(b), iv.layer, iv.position, iv.unit,
                       iv.op == InterventionOp::set ? 0 : 1, static_cast<float>(iv.value)});
    std::vector<DeviceQuery> qs;
    for (const auto& q : queries) qs.push_back({q.position, q.target});
    Matrix<float> out(static_cast<Index>(patterns.size()), static_cast<Index>(queries.size()));
    const std::lock_guard lock(*mutex_);
    engine_->probabilities(*t.device, static_cast<int>(patterns.size()), ivs, qs, out.data());
    return out;
  }

  /// Column `unit` of layer `layer`'s `mlp.c_proj`: the vector the neuron writes.
  Vector<float> value_vector(int layer, int unit) const {
    Vector<float> v(hidden_size());
    const std::lock_guard lock(*mutex_);
    engine_->value_column(layer, unit, v.data());
    return v;
  }
  void set_value_vector(int layer, int unit, const Vector<float>& v) {
    knprobe::detail::require_size(v, hidden_size(), "set_value_vector v");
    const std::lock_guard lock(*mutex_);
    engine_->set_value_column(layer, unit, v.data());
  }
  Vector<float> token_embedding(TokenId id) const {
    Vector<float> v(hidden_size());
    const std::lock_guard lock(*mutex_);
    engine_->embedding_row(id, v.data());
    return v;
  }

  /// Rows of one device pass of `layer_gradients` (bounds the logits' working memory).
  static constexpr Index k_rows_per_pass = 2048;

 private:
  static Gpt2Shape shape_of(const io::Gpt2Config& c) {
    KNPROBE_REQUIRE(c.activation_function == "gelu_new" || c.activation_function == "gelu" ||
                        c.activation_function == "gelu_pytorch_tanh",
                    ArgumentError, "cuda gpt2: activation_function '", c.activation_function,
                    "' not supported");
    Gpt2Shape s;
    s.n_layer = c.n_layer;
    s.n_head = c.n_head;
    s.d_model = c.n_embd;
    s.ffn = c.ffn_width();
    s.vocab = c.vocab_size;
    s.n_positions = c.n_positions;
    s.eps = static_cast<float>(c.layer_norm_epsilon);
    s.gelu_erf = c.activation_function == "gelu";
    s.site_pre_activation = Site == NeuronSite::pre_activation;
    return s;
  }

  static Gpt2HostWeights host_pointers(const Gpt2Weights<float>& w) {
    const auto& c = w.config;
    KNPROBE_REQUIRE(static_cast<int>(w.layers.size()) == c.n_layer, ShapeError,
                    "cuda gpt2: ", w.layers.size(), " layers for n_layer = ", c.n_layer);
    knprobe::detail::require_shape(w.wte, c.vocab_size, c.n_embd, "gpt2 wte");
    knprobe::detail::require_shape(w.wpe, c.n_positions, c.n_embd, "gpt2 wpe");
    Gpt2HostWeights h{w.wte.data(), w.wpe.data(), w.lnf_g.data(), w.lnf_b.data(), {}};
    const Index d = c.n_embd, f = c.ffn_width();
    for (const auto& l : w.layers) {
      knprobe::detail::require_shape(l.wq, d, d, "gpt2 wq");
      knprobe::detail::require_shape(l.w_fc, f, d, "gpt2 w_fc");
      knprobe::detail::require_shape(l.w_proj, d, f, "gpt2 w_proj");
      h.layers.push_back({l.ln1_g.data(), l.ln1_b.data(), l.wq.data(), l.wk.data(), l.wv.data(),
                          l.wo.data(), l.bq.data(), l.bk.data(), l.bv.data(), l.bo.data(),
                          l.ln2_g.data(), l.ln2_b.data(), l.w_fc.data(), l.w_proj.data(),
                          l.b_fc.data(), l.b_proj.data()});
    }
    return h;
  }

  io::Gpt2Config config_;
  std::unique_ptr<Gpt2Engine> engine_;
  std::unique_ptr<std::mutex> mutex_;  // one stream and workspace per engine
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
