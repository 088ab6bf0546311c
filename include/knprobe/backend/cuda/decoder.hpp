#pragma once
// The host side shared by the CUDA models (cuda::CudaGpt2Model, cuda::CudaLlamaModel): every
// ProbeableModel operation forwarded to one DecoderEngine, with Eigen matrices on this side only.
//   trace:            one forward pass on the device; the neuron-site activations come back to the
//                     host, residual stream and keys / values stay on the device for reuse.
//   layer_gradients:  every request of a call in one pass: rows of all layers' requests share the
//                     GEMMs of the layers above them and one output-head GEMM (forward and back);
//                     each row recomputes its own position only, against the cached keys / values.
//                     The multi-trace form does the same over several facts' traces at once.
//   probabilities:    one batched pass over the patterns from the lowest intervened layer; the
//                     multi-prompt form stacks every (prompt, pattern) into one forward from the
//                     embedding (no traces), sharing the GEMMs and one head GEMM.
//   mean_site_activations: AMIG baselines as one batched forward.
//   value vectors:    read / written on the device; set_value_vector restores bit-exactly.
// Calls are serialised (one stream and workspace per engine).

#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "knprobe/backend/cuda/decoder_engine.hpp"
#include "knprobe/model/backend_support.hpp"
#include "knprobe/model/concept.hpp"

namespace knprobe::cuda::detail {

/// `iv` as the engine's DeviceIntervention of pattern `pattern` (op 0 = set, 1 = scale; the
/// kernels apply it as knprobe::intervened does).
inline DeviceIntervention to_device(const Intervention& iv, int pattern) {
  return {pattern,
          iv.layer,
          iv.position,
          iv.unit,
          iv.op == InterventionOp::set ? 0 : 1,
          static_cast<float>(iv.value)};
}

class CudaDecoderBase {
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

  int num_layers() const { return engine_->shape().n_layer; }
  int ffn_width() const { return engine_->shape().ffn; }
  int hidden_size() const { return engine_->shape().d_model; }
  int vocab_size() const { return engine_->shape().vocab; }
  Precision precision() const { return engine_->precision(); }
  void set_precision(Precision p) { engine_->set_precision(p); }
  const DecoderEngine& engine() const { return *engine_; }

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

  /// The requests of several traces (facts) in one device pass (HasMultiTraceLayerGradients):
  /// result[i][j] = layer_gradients(*batch[i].trace, batch[i].requests)[j] up to the rounding of
  /// larger GEMMs; at most k_rows_per_pass points per pass, a request never split.
  std::vector<std::vector<LayerGradients<float>>> layer_gradients(
      std::span<const TracedRequests<Trace, float>> batch) const {
    std::vector<std::vector<LayerGradients<float>>> out(batch.size());
    std::vector<std::pair<std::size_t, std::size_t>> index;  // (batch entry, request)
    for (std::size_t i = 0; i < batch.size(); ++i) {
      KNPROBE_REQUIRE(batch[i].trace != nullptr && batch[i].trace->device, ArgumentError,
                      "layer_gradients: entry ", i, " of the batch has no trace");
      out[i].resize(batch[i].requests.size());
      for (std::size_t j = 0; j < batch[i].requests.size(); ++j) {
        const auto& q = batch[i].requests[j];
        knprobe::detail::require_cols(q.points, ffn_width(), "layer_gradients points");
        KNPROBE_REQUIRE(q.points.rows() > 0, ArgumentError, "layer_gradients: no points");
        index.emplace_back(i, j);
      }
    }
    const std::lock_guard lock(*mutex_);
    std::size_t begin = 0;
    while (begin < index.size()) {  // passes of at most k_rows_per_pass rows (≥ one request)
      std::vector<const DeviceTrace*> traces;
      std::vector<std::size_t> slot(batch.size(), batch.size());  // batch entry → trace index
      std::vector<GradientRequest> dev;
      Index rows = 0;
      std::size_t k = begin;
      for (; k < index.size(); ++k) {
        const auto [i, j] = index[k];
        const auto& q = batch[i].requests[j];
        if (k > begin && rows + q.points.rows() > k_rows_per_pass) break;
        rows += q.points.rows();
        if (slot[i] == batch.size()) {
          slot[i] = traces.size();
          traces.push_back(batch[i].trace->device.get());
        }
        auto& o = out[i][j];
        o.probabilities.resize(q.points.rows());
        o.gradients.resize(q.points.rows(), ffn_width());
        GradientRequest g{q.layer,           q.position,      static_cast<int>(q.points.rows()),
                          q.target,          q.points.data(), o.probabilities.data(),
                          o.gradients.data()};
        g.trace = static_cast<int>(slot[i]);
        dev.push_back(g);
      }
      engine_->layer_gradients(traces.data(), static_cast<int>(traces.size()), dev.data(),
                               static_cast<int>(dev.size()));
      begin = k;
    }
    return out;
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
      for (const auto& iv : patterns[b]) ivs.push_back(detail::to_device(iv, static_cast<int>(b)));
    std::vector<DeviceQuery> qs;
    for (const auto& q : queries) qs.push_back({q.position, q.target});
    Matrix<float> out(static_cast<Index>(patterns.size()), static_cast<Index>(queries.size()));
    const std::lock_guard lock(*mutex_);
    engine_->probabilities(*t.device, static_cast<int>(patterns.size()), ivs, qs, out.data());
    return out;
  }

  /// Several prompts in one device forward: result[r] = probabilities(requests[r].tokens,
  /// .patterns, .queries) (HasBatchedProbabilities), equal to the single-prompt form up to float
  /// rounding (the rows are recomputed from the embedding instead of reusing a trace). Every
  /// request is checked before any work; an ArgumentError names the request and what is wrong.
  std::vector<Matrix<float>> probabilities(std::span<const ProbabilityRequest> requests) const {
    const int L = num_layers(), F = ffn_width(), V = vocab_size();
    const int n_max = engine_->shape().n_positions;
    std::vector<std::int32_t> tokens;
    std::vector<DevicePrompt> prompts;
    std::vector<DeviceIntervention> ivs;
    std::vector<DeviceQuery> qs;
    for (std::size_t r = 0; r < requests.size(); ++r) {
      const auto& q = requests[r];
      const int n = static_cast<int>(q.tokens.size());
      KNPROBE_REQUIRE(n > 0, ArgumentError, "probabilities: request ", r, " has no tokens");
      KNPROBE_REQUIRE(n_max <= 0 || n <= n_max, ArgumentError, "probabilities: request ", r,
                      " has ", n, " tokens, more than the model's ", n_max, " positions");
      for (const TokenId t : q.tokens)
        KNPROBE_REQUIRE(t >= 0 && t < V, ArgumentError, "probabilities: request ", r, ": token id ",
                        t, " outside the vocabulary [0, ", V, ")");
      DevicePrompt p{
          static_cast<int>(tokens.size()),
          n,
          static_cast<int>(prompts.empty() ? 0 : prompts.back().pattern0 + prompts.back().patterns),
          static_cast<int>(q.patterns.size()),
          static_cast<int>(qs.size()),
          static_cast<int>(q.queries.size())};
      tokens.insert(tokens.end(), q.tokens.begin(), q.tokens.end());
      for (std::size_t b = 0; b < q.patterns.size(); ++b)
        for (const auto& iv : q.patterns[b]) {
          KNPROBE_REQUIRE(iv.layer >= 0 && iv.layer < L, ArgumentError, "probabilities: request ",
                          r, ", pattern ", b, ": intervention layer ", iv.layer,
                          " outside the model's ", L, " layers");
          KNPROBE_REQUIRE(iv.unit >= 0 && iv.unit < F, ArgumentError, "probabilities: request ", r,
                          ", pattern ", b, ": intervention unit ", iv.unit, " outside [0, ", F,
                          ")");
          KNPROBE_REQUIRE(iv.position >= 0 && iv.position < n, ArgumentError,
                          "probabilities: request ", r, ", pattern ", b, ": intervention position ",
                          iv.position, " outside the prompt's ", n, " tokens");
          ivs.push_back(detail::to_device(iv, p.pattern0 + static_cast<int>(b)));
        }
      for (const auto& query : q.queries) {
        KNPROBE_REQUIRE(query.position >= 0 && query.position < n, ArgumentError,
                        "probabilities: request ", r, ": query position ", query.position,
                        " outside the prompt's ", n, " tokens");
        KNPROBE_REQUIRE(query.target >= 0 && query.target < V, ArgumentError,
                        "probabilities: request ", r, ": target ", query.target,
                        " outside the vocabulary [0, ", V, ")");
        qs.push_back({query.position, query.target});
      }
      prompts.push_back(p);
    }
    std::size_t total = 0;
    for (const auto& p : prompts) total += std::size_t(p.patterns) * std::size_t(p.queries);
    std::vector<float> flat(total);
    {
      const std::lock_guard lock(*mutex_);
      engine_->probabilities(tokens.data(), prompts, ivs, qs, flat.data());
    }
    std::vector<Matrix<float>> out;
    std::size_t at = 0;
    for (const auto& p : prompts) {
      out.push_back(Eigen::Map<const Matrix<float>>(flat.data() + at, p.patterns, p.queries));
      at += std::size_t(p.patterns) * std::size_t(p.queries);
    }
    return out;
  }

  /// Column `unit` of layer `layer`'s FFN output matrix: the vector the neuron writes.
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
  /// Row `id` of the (unscaled) input embedding.
  Vector<float> token_embedding(TokenId id) const {
    Vector<float> v(hidden_size());
    const std::lock_guard lock(*mutex_);
    engine_->embedding_row(id, v.data());
    return v;
  }

  /// Rows of one device pass of `layer_gradients` (bounds the logits' working memory).
  static constexpr Index k_rows_per_pass = 2048;

 protected:
  CudaDecoderBase(const DecoderShape& shape, const DecoderHostWeights& w, Precision precision,
                  int device)
      : engine_(std::make_unique<DecoderEngine>(shape, w, device)),
        mutex_(std::make_unique<std::mutex>()) {
    engine_->set_precision(precision);
  }

 private:
  std::unique_ptr<DecoderEngine> engine_;
  std::unique_ptr<std::mutex> mutex_;
};

}  // namespace knprobe::cuda::detail
