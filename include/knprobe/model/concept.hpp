#pragma once
// The one customization point of knprobe: a model type M is probeable when ArchTraits<M> says what
// it is and M offers the handful of operations below. KnowledgeProbe<M> never asks which concrete
// model it holds; backends never know about attribution.

#include <concepts>
#include <span>
#include <type_traits>
#include <vector>

#include "knprobe/core/tensor.hpp"
#include "knprobe/model/blocks/embedding.hpp"
#include "knprobe/model/blocks/linear.hpp"

namespace knprobe {

/// Training objective: encoders predict a `[MASK]` position, decoders the next token.
enum class Objective { masked_lm, causal_lm };

/// FFN shape: dense `W2 · act(W1 x)` or gated `W2 · (act(Wg x) ⊙ Wu x)`.
enum class FfnLayout { dense, gated };

/// Which vector a knowledge neuron is an entry of (the one multiplied by the FFN output matrix,
/// except `pre_activation`, the GPT-2 reference code's `c_fc` hook kept for paper compatibility).
enum class NeuronSite { post_activation, gated_product, pre_activation };

/// Architecture facts of a model type, as compile-time constants. Specialise for every backend:
/// @code
/// template <> struct ArchTraits<MyModel> {
///   static constexpr Objective objective = Objective::causal_lm;
///   static constexpr FfnLayout ffn_layout = FfnLayout::gated;
///   static constexpr NeuronSite neuron_site = NeuronSite::gated_product;
/// };
/// @endcode
template <class M>
struct ArchTraits;

/// A knowledge-neuron candidate: unit `unit` of the FFN neuron site of layer `layer`.
struct Neuron {
  int layer = 0;
  int unit = 0;
  friend auto operator<=>(const Neuron&, const Neuron&) = default;
};

/// What an intervention does to one activation `h`: `set` → h = value, `scale` → h = value · h.
enum class InterventionOp { set, scale };

/// One activation change at the neuron site of (layer, unit) at token `position`.
struct Intervention {
  int layer = 0;
  int unit = 0;
  int position = 0;
  InterventionOp op = InterventionOp::scale;
  double value = 0.0;
};

/// The interventions applied together in one forward pass (empty = the clean model).
using InterventionPattern = std::vector<Intervention>;

/// h after intervention `iv`: value (`set`) or value · h (`scale`), computed in h's type. Every
/// backend applies interventions through this one function.
template <class T>
T intervened(const Intervention& iv, T h) {
  return iv.op == InterventionOp::set ? static_cast<T>(iv.value) : h * static_cast<T>(iv.value);
}

/// "Probability of token `target` in the output distribution at position `position`": for an
/// encoder the distribution at a `[MASK]`, for a decoder the next-token distribution.
struct Query {
  int position = 0;
  TokenId target = 0;
};

/// Result of `layer_gradients` for B replacement vectors h_b of one layer's activation:
/// probabilities[b] = P(target | h_b), gradients.row(b) = dP/dh evaluated at h_b.
template <class T>
struct LayerGradients {
  Vector<T> probabilities;  ///< [B]
  Matrix<T> gradients;      ///< [B × ffn_width]
};

/// One request of a batched `layer_gradients`: replace the neuron vector of `layer` at `position`
/// by each row of `points` and differentiate P(target) there.
template <class T>
struct LayerRequest {
  int layer = 0;
  int position = 0;
  Matrix<T> points;
  TokenId target = 0;
};

/// ArchTraits<M> is specialised with the three architecture constants.
template <class M>
concept HasArchTraits = requires {
  { ArchTraits<M>::objective } -> std::convertible_to<Objective>;
  { ArchTraits<M>::ffn_layout } -> std::convertible_to<FfnLayout>;
  { ArchTraits<M>::neuron_site } -> std::convertible_to<NeuronSite>;
};

/// M names its scalar and trace types and reports its sizes.
template <class M>
concept HasModelShape = requires(const M& m) {
  typename M::Scalar;
  typename M::Trace;
  { m.num_layers() } -> std::convertible_to<int>;
  { m.ffn_width() } -> std::convertible_to<int>;
  { m.hidden_size() } -> std::convertible_to<int>;
  { m.vocab_size() } -> std::convertible_to<int>;
};

/// `trace(tokens)`: one forward pass keeping what attribution reuses (the residual stream entering
/// every layer); `trace.activations(l)` is the neuron-site matrix [tokens × ffn_width] of layer l.
template <class M>
concept Traceable = HasModelShape<M> && requires(const M& m, std::span<const TokenId> tokens,
                                                 const typename M::Trace& trace, int layer) {
  { m.trace(tokens) } -> std::same_as<typename M::Trace>;
  { trace.activations(layer) } -> std::convertible_to<ConstMatrixRef<typename M::Scalar>>;
  { trace.num_tokens() } -> std::convertible_to<int>;
};

/// `layer_gradients(trace, l, p, points, target)`: replace the layer-l neuron-site activation at
/// position p by each row of `points` [B × ffn_width], run layers ≥ l only (the cached stream below
/// l is reused) and return P(target) at p and dP/dh for every row. Activation gradients only.
template <class M>
concept HasLayerGradients = Traceable<M> &&
    requires(const M& m, const typename M::Trace& trace, int layer, int position,
             const Matrix<typename M::Scalar>& points, TokenId target) {
  {
    m.layer_gradients(trace, layer, position, points, target)
    } -> std::same_as<LayerGradients<typename M::Scalar>>;
};

/// Optional: `layer_gradients(trace, requests)` answers several (layer, position, points, target)
/// requests at once so that the output head runs as one large GEMM. KnowledgeProbe uses it when
/// present and falls back to one call per layer otherwise.
template <class M>
concept HasBatchedLayerGradients = HasLayerGradients<M> &&
    requires(const M& m, const typename M::Trace& trace,
             std::span<const LayerRequest<typename M::Scalar>> reqs) {
  {
    m.layer_gradients(trace, reqs)
    } -> std::same_as<std::vector<LayerGradients<typename M::Scalar>>>;
};

/// The requests of one trace in a multi-trace `layer_gradients` call.
template <class Trace, class T>
struct TracedRequests {
  const Trace* trace = nullptr;
  std::span<const LayerRequest<T>> requests;
};

/// Optional: `layer_gradients(batch)` runs the requests of several traces (several facts) in one
/// pass: result[i][j] = layer_gradients(*batch[i].trace, batch[i].requests)[j] up to float
/// rounding, every row recomputed against its own trace. attribute_many / attribute_groups use
/// it when present and run the traces one after another otherwise. (The CUDA backends: the rows
/// of every fact share each layer's GEMMs and the head's.)
template <class M>
concept HasMultiTraceLayerGradients = HasBatchedLayerGradients<M> &&
    requires(const M& m,
             std::span<const TracedRequests<typename M::Trace, typename M::Scalar>> batch) {
  {
    m.layer_gradients(batch)
    } -> std::same_as<std::vector<std::vector<LayerGradients<typename M::Scalar>>>>;
};

/// Optional: `mean_site_activations(prompts, positions)` returns, for prompts of one length,
/// result[l] [positions × ffn_width] = the mean over the prompts of the layer-l neuron-site
/// activation at each position (the AMIG baseline), as one batched forward. attribute() uses it
/// when present and traces the prompts one by one otherwise.
template <class M>
concept HasBatchedMeanActivations = Traceable<M> &&
    requires(const M& m, std::span<const std::vector<TokenId>> prompts,
             std::span<const int> positions) {
  {
    m.mean_site_activations(prompts, positions)
    } -> std::same_as<std::vector<Matrix<typename M::Scalar>>>;
};

/// Optional: `logits(trace)` [tokens × vocab] of every traced position. Screening (top-1 / rank
/// checks) and `knprobe predict` use it; without it a fact is kept unscreened.
template <class M>
concept HasLogits = Traceable<M> && requires(const M& m, const typename M::Trace& trace) {
  { m.logits(trace) } -> std::convertible_to<Matrix<typename M::Scalar>>;
};

/// Optional: `logits(trace, positions)` [positions × vocab], the rows of `logits(trace)` at
/// `positions` only: the output head runs on those rows (screening needs the answer positions).
template <class M>
concept HasPositionLogits = HasLogits<M> &&
    requires(const M& m, const typename M::Trace& trace, std::span<const int> positions) {
  { m.logits(trace, positions) } -> std::convertible_to<Matrix<typename M::Scalar>>;
};

/// `probabilities(tokens, patterns, queries)`: one forward per pattern (run as one batch),
/// returning [patterns × queries] probabilities under each pattern's interventions.
template <class M>
concept HasInterventions = HasModelShape<M> &&
    requires(const M& m, std::span<const TokenId> tokens,
             std::span<const InterventionPattern> patterns, std::span<const Query> queries) {
  { m.probabilities(tokens, patterns, queries) } -> std::same_as<Matrix<typename M::Scalar>>;
};

/// Optional: `probabilities(trace, patterns, queries)` on a trace already computed (the DKN search
/// reuses one clean trace for every batch of candidate sets).
template <class M>
concept HasTraceProbabilities = HasInterventions<M> && Traceable<M> &&
    requires(const M& m, const typename M::Trace& trace,
             std::span<const InterventionPattern> patterns, std::span<const Query> queries) {
  { m.probabilities(trace, patterns, queries) } -> std::same_as<Matrix<typename M::Scalar>>;
};

/// Optional: `max_positions()`, the longest sequence the model accepts (learned positions, a
/// trained context); KnowledgeProbe refuses longer prompts by name.
template <class M>
concept HasMaxPositions = requires(const M& m) {
  { m.max_positions() } -> std::convertible_to<int>;
};

/// One prompt of a batched `probabilities` call (the spans must outlive the call).
struct ProbabilityRequest {
  std::span<const TokenId> tokens;
  std::span<const InterventionPattern> patterns;
  std::span<const Query> queries;
};

/// Optional: `probabilities(requests)` answers several prompts at once, result[r] =
/// probabilities(requests[r].tokens, .patterns, .queries), so that a fact's effects, its controls
/// and its unrelated facts share one batched pass. KnowledgeProbe::effects uses it when present
/// and calls the single-prompt form once per request otherwise.
template <class M>
concept HasBatchedProbabilities = HasInterventions<M> &&
    requires(const M& m, std::span<const ProbabilityRequest> requests) {
  { m.probabilities(requests) } -> std::same_as<std::vector<Matrix<typename M::Scalar>>>;
};

/// Value vectors (the FFN output-matrix column a unit writes with, [hidden]) and input token
/// embeddings, for weight edits; `set_value_vector` is what an RAII edit guard restores through.
template <class M>
concept HasValueVectors = HasModelShape<M> &&
    requires(const M& cm, M& m, int layer, int unit, TokenId id,
             const Vector<typename M::Scalar>& v) {
  { cm.value_vector(layer, unit) } -> std::same_as<Vector<typename M::Scalar>>;
  {m.set_value_vector(layer, unit, v)};
  { cm.token_embedding(id) } -> std::same_as<Vector<typename M::Scalar>>;
};

/// Block-quantized weights (GGUF Q4_K, Q8_0, ...), defined in model/blocks/quantized_linear.hpp.
class QuantizedMatrix;

// The weight-storage customisation points for QuantizedMatrix, declared here so that the
// WeightStorage concept below sees them wherever it is checked (the dense Matrix<T> ones are in
// model/blocks/linear.hpp and embedding.hpp, included above); defined in quantized_linear.hpp.
// Quantized weights compute in float only, so they do not satisfy WeightStorage<_, double>.
namespace blocks::linear {
template <class T>
requires std::same_as<T, float>
void forward(ConstMatrixRef<T> x, const QuantizedMatrix& w, Matrix<T>& y);
template <class T>
requires std::same_as<T, float>
void backward(ConstMatrixRef<T> dy, const QuantizedMatrix& w, Matrix<T>& dx);
template <class T>
requires std::same_as<T, float>
void backward_add(ConstMatrixRef<T> dy, const QuantizedMatrix& w, Matrix<T>& dx);
inline VectorF column(const QuantizedMatrix& w, Index j);
inline void set_column(QuantizedMatrix& w, Index j, const VectorF& v);
inline VectorF row(const QuantizedMatrix& w, Index i);
}  // namespace blocks::linear
namespace blocks::embedding {
template <class T>
requires std::same_as<T, float>
void forward(std::span<const TokenId> ids, const QuantizedMatrix& table, T scale, Matrix<T>& y);
}  // namespace blocks::embedding

/// W can hold a model's weight matrices [out × in] for computing in scalar T (the `W` of
/// LlamaModel<T, W> and LlamaWeights<T, W>): it reports its shape, and knprobe::blocks provides
///   linear::forward<T>(x, w, y)        y = x Wᵀ
///   linear::backward<T>(dy, w, dx)     dx = dy W
///   linear::backward_add<T>(dy, w, dx) dx += dy W
///   linear::column(w, j), set_column(w, j, v), row(w, i)   (value vectors, embeddings; edits)
///   embedding::forward<T>(ids, w, scale, y)                y[t] = scale · W[ids[t]]
/// for it. Matrix<T> (dense, any T) and QuantizedMatrix (T = float) satisfy it; a new storage
/// (say, a sparse or memory-mapped matrix) declares those overloads before this header is
/// included.
template <class W, class T>
concept WeightStorage = requires(const W& cw, W& w, ConstMatrixRef<T> x, Matrix<T>& y, Index j,
                                 const Vector<T>& v, std::span<const TokenId> ids, T scale) {
  { cw.rows() } -> std::convertible_to<Index>;
  { cw.cols() } -> std::convertible_to<Index>;
  blocks::linear::forward<T>(x, cw, y);
  blocks::linear::backward<T>(x, cw, y);
  blocks::linear::backward_add<T>(x, cw, y);
  { blocks::linear::column(cw, j) } -> std::same_as<Vector<T>>;
  blocks::linear::set_column(w, j, v);
  { blocks::linear::row(cw, j) } -> std::same_as<Vector<T>>;
  blocks::embedding::forward<T>(ids, cw, scale, y);
};

/// Everything KnowledgeProbe<M> needs.
template <class M>
concept ProbeableModel = HasArchTraits<M> && HasModelShape<M> && Traceable<M> &&
    HasLayerGradients<M> && HasInterventions<M> && HasValueVectors<M>;

namespace detail {

/// Checks M piece by piece so that the compiler prints the first missing piece in words.
template <class M>
constexpr bool assert_probeable() {
  static_assert(HasArchTraits<M>,
                "knprobe: ArchTraits<M> is not specialised (need objective, ffn_layout, "
                "neuron_site)");
  static_assert(HasModelShape<M>,
                "knprobe: M needs Scalar, Trace, num_layers(), ffn_width(), hidden_size(), "
                "vocab_size()");
  static_assert(Traceable<M>,
                "knprobe: M needs trace(span<const TokenId>) -> Trace with activations(layer) "
                "and num_tokens()");
  static_assert(HasLayerGradients<M>,
                "knprobe: M needs layer_gradients(trace, layer, position, points, target) -> "
                "LayerGradients<Scalar>");
  static_assert(HasInterventions<M>,
                "knprobe: M needs probabilities(tokens, patterns, queries) -> Matrix<Scalar>");
  static_assert(HasValueVectors<M>,
                "knprobe: M needs value_vector(layer, unit), set_value_vector(layer, unit, v) "
                "and token_embedding(id)");
  return true;
}

}  // namespace detail
}  // namespace knprobe

/// Fails compilation with a sentence naming the first missing piece when M is not probeable.
#define KNPROBE_ASSERT_PROBEABLE(...) \
  static_assert(::knprobe::detail::assert_probeable<__VA_ARGS__>())
