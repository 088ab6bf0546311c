// One conformance suite for every CPU backend: each property is written once, against the
// ProbeableModel contract of model/concept.hpp only, and runs over every model type (LlamaModel of
// every LlamaArch — Llama 2 and Gemma 3 from random weights, Llama 3.x, Mistral, Qwen 2 and Qwen 3
// from the committed random Hugging Face checkpoints —, GPT-2 at both neuron sites, BERT), in
// double, and the float QuantizedLlamaModel (weights in blocks, as the CLI runs GGUF files) for
// Llama 2 and Gemma 3. A new architecture gets the whole suite by adding one Backend line to
// `backends`. Float backends meet float tolerances (`tol`), and their gradients are checked against
// the double model of the same weights (`reference`), whose own gradients meet finite differences.
// Optional capabilities (HasBatchedLayerGradients, HasBatchedProbabilities,
// HasBatchedMeanActivations) are checked where the model has them, against the required single-call
// forms.
#include <array>
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>
#include <cstring>

#include "knprobe/model/bert.hpp"
#include "knprobe/model/gpt2.hpp"
#include "knprobe/model/llama.hpp"
#include "support/finite_diff.hpp"
#include "support/paths.hpp"
#include "support/random_llama.hpp"

using namespace knprobe;

namespace conformance {  // named: the test files share unity batches

/// The committed random Hugging Face checkpoint of a Llama-family architecture, in double.
inline LlamaModel<double> hf_llama(const char* name) {
  return LlamaModel<double>(
      load_llama_safetensors(testing::data_dir() / "hf" / name).cast<double>());
}

/// A backend under test: how to make it and a prompt of its vocabulary (ids < 50).
template <class M, int Kind>
struct Backend {
  using Model = M;
  static Model make() {
    if constexpr (std::is_same_v<M, QuantizedLlamaModel>)
      return Model(testing::random_llama(Kind == 1, 31).cast<float>().to_quantized_storage());
    else if constexpr (Kind == 0)
      return Model(testing::random_llama(false, 31));
    else if constexpr (Kind == 1)
      return Model(testing::random_llama(true, 31));
    else if constexpr (Kind == 2)
      return Model::load(testing::data_dir() / "hf" / "gpt2_tiny");
    else if constexpr (Kind == 3)
      return Model::load(testing::data_dir() / "hf" / "bert_tiny");
    else
      return hf_llama(
          std::array{"llama3_tiny", "mistral_tiny", "qwen2_tiny", "qwen3_tiny"}[Kind - 4]);
  }
  /// The double model of the same weights (float backends: what their gradients are checked by).
  static LlamaModel<double> reference() {
    return LlamaModel<double>(testing::random_llama(Kind == 1, 31));
  }
  static std::vector<TokenId> tokens() { return {2, 17, 5, 33, 8, 41, 12, 3}; }
};

using backends =
    boost::mpl::list<Backend<LlamaModel<double>, 0>,  // Llama 2: SwiGLU, interleaved RoPE
                     Backend<LlamaModel<double>, 1>,  // Gemma 3: sandwich / q-k norms, windows
                     Backend<LlamaModel<double>, 4>,  // Llama 3.x: RoPE frequency factors
                     Backend<LlamaModel<double>, 5>,  // Mistral: a window on every layer
                     Backend<LlamaModel<double>, 6>,  // Qwen 2: q / k / v biases
                     Backend<LlamaModel<double>, 7>,  // Qwen 3: q / k norms, no sandwich
                     Backend<Gpt2Model<double>, 2>,   // post-activation neurons
                     Backend<Gpt2Model<double, NeuronSite::pre_activation>, 2>,
                     Backend<BertModel<double>, 3>,     // masked LM, bidirectional
                     Backend<QuantizedLlamaModel, 0>,   // float, weights in blocks: Llama 2
                     Backend<QuantizedLlamaModel, 1>>;  // and Gemma 3

template <class M>
using Scalar = typename M::Scalar;
template <class M>
using Mat = Matrix<Scalar<M>>;

/// A tolerance of double backends, or the one float backends meet instead.
template <class M>
constexpr double tol(double in_double, double in_float) {
  return std::is_same_v<Scalar<M>, double> ? in_double : in_float;
}

template <class M>
constexpr bool causal = ArchTraits<M>::objective == Objective::causal_lm;

// The optional capabilities each backend is expected to have: a concept that stopped matching
// would otherwise turn its test case into one that checks nothing.
static_assert(HasBatchedLayerGradients<LlamaModel<double>> &&
              HasBatchedLayerGradients<Gpt2Model<double>>);
static_assert(HasBatchedProbabilities<LlamaModel<double>> &&
              HasBatchedProbabilities<Gpt2Model<double>>);
static_assert(HasBatchedMeanActivations<LlamaModel<double>> &&
              HasBatchedMeanActivations<Gpt2Model<double>>);
static_assert(HasPositionLogits<LlamaModel<double>> && HasPositionLogits<Gpt2Model<double>> &&
              HasPositionLogits<BertModel<double>>);
static_assert(HasTraceProbabilities<LlamaModel<double>> &&
              HasTraceProbabilities<Gpt2Model<double>> && HasTraceProbabilities<BertModel<double>>);
static_assert(HasBatchedLayerGradients<QuantizedLlamaModel> &&
              HasBatchedProbabilities<QuantizedLlamaModel> &&
              HasBatchedMeanActivations<QuantizedLlamaModel> &&
              HasPositionLogits<QuantizedLlamaModel> && HasTraceProbabilities<QuantizedLlamaModel>);

/// P(target at position) of the unmodified model, through the contract's probabilities().
template <class M>
double clean_probability(const M& m, std::span<const TokenId> tokens, int position,
                         TokenId target) {
  const std::vector<InterventionPattern> none(1);
  const std::vector<Query> q{{position, target}};
  return m.probabilities(tokens, none, q)(0, 0);
}

}  // namespace conformance

using conformance::backends;
using conformance::causal;
using conformance::clean_probability;
using conformance::Mat;
using conformance::Scalar;
using conformance::tol;

BOOST_AUTO_TEST_SUITE(model_conformance)

// dP/dh from layer_gradients equals central finite differences of P(h) at the real activation,
// half of it and a random point, at every layer and two positions; the real activation gives
// the clean probability. Float backends: the same gradients as the double model of the same
// weights (whose gradients meet finite differences here), to float accuracy.
BOOST_AUTO_TEST_CASE_TEMPLATE(layer_gradients_match_finite_differences, B, backends) {
  using M = typename B::Model;
  const auto m = B::make();
  const auto tokens = B::tokens();
  const auto t = m.trace(tokens);
  const int n = t.num_tokens();
  Rng rng(3);
  const TokenId target = 9;
  for (int layer = 0; layer < m.num_layers(); ++layer)
    for (int pos : {n - 1, n / 2}) {
      Mat<M> pts(3, m.ffn_width());
      pts.row(0) = t.activations(layer).row(pos);
      pts.row(1) = Scalar<M>(0.5) * t.activations(layer).row(pos);
      pts.row(2) = testing::random_matrix<Scalar<M>>(rng, 1, m.ffn_width());
      const auto g = m.layer_gradients(t, layer, pos, pts, target);
      BOOST_REQUIRE(g.gradients.rows() == 3);
      BOOST_REQUIRE(g.gradients.cols() == m.ffn_width());
      if constexpr (std::is_same_v<Scalar<M>, double>) {
        for (int b = 0; b < 3; ++b) {
          auto loss = [&](const MatrixD& x) {
            return m.layer_gradients(t, layer, pos, x, target).probabilities[0];
          };
          const double err =
              testing::gradient_error(loss, MatrixD(pts.row(b)), g.gradients.row(b), rng, 24, 1e-6);
          BOOST_TEST(err < 1e-6, "layer " << layer << " pos " << pos << " point " << b);
        }
      } else {
        const auto ref = B::reference();
        const auto tr = ref.trace(tokens);
        const MatrixD a = t.activations(layer).template cast<double>();
        BOOST_TEST((a - tr.activations(layer)).norm() <= 1e-5 * tr.activations(layer).norm(),
                   "layer " << layer);
        const auto gr = ref.layer_gradients(tr, layer, pos, pts.template cast<double>(), target);
        BOOST_TEST((g.gradients.template cast<double>() - gr.gradients).norm() <=
                       1e-3 * gr.gradients.norm(),
                   "layer " << layer << " pos " << pos);
        BOOST_TEST(std::abs(double(g.probabilities[0]) - gr.probabilities[0]) <
                       1e-5 * gr.probabilities[0] + 1e-9,
                   "layer " << layer << " pos " << pos);
      }
      BOOST_TEST(std::abs(g.probabilities[0] - clean_probability(m, tokens, pos, target)) <
                 tol<M>(1e-12, 1e-6));
    }
}

// A batch of requests (layers out of order, two at one layer, another position) equals the
// single calls.
BOOST_AUTO_TEST_CASE_TEMPLATE(batched_layer_gradients_equal_single_calls, B, backends) {
  using M = typename B::Model;
  if constexpr (HasBatchedLayerGradients<M>) {
    const auto m = B::make();
    const auto t = m.trace(B::tokens());
    const int n = t.num_tokens(), L = m.num_layers();
    Rng rng(11);
    std::vector<LayerRequest<Scalar<M>>> reqs;
    for (const int l : {L - 1, 0, 1, 1}) {
      Mat<M> pts = t.activations(l).row(n - 1).replicate(2, 1);
      pts.row(1) = testing::random_matrix<Scalar<M>>(rng, 1, m.ffn_width());
      reqs.push_back({l, n - 1, pts, TokenId(7 + l)});
    }
    reqs.push_back({0, n - 3, Mat<M>(t.activations(0).row(n - 3)), TokenId(5)});
    const auto all = m.layer_gradients(t, std::span<const LayerRequest<Scalar<M>>>(reqs));
    BOOST_REQUIRE(all.size() == reqs.size());
    for (std::size_t r = 0; r < reqs.size(); ++r) {
      const auto& q = reqs[r];
      const auto one = m.layer_gradients(t, q.layer, q.position, q.points, q.target);
      BOOST_TEST(
          (all[r].gradients - one.gradients).norm() <= tol<M>(1e-12, 1e-5) * one.gradients.norm(),
          "request " << r);
      BOOST_TEST(
          (all[r].probabilities - one.probabilities).cwiseAbs().maxCoeff() < tol<M>(1e-14, 1e-6),
          "request " << r);
    }
    // Under a cache budget of one byte the points go in slices of one: the same numbers.
    if constexpr (requires(M & x) { x.set_layer_cache_budget(1.0); }) {
      auto tight = B::make();
      tight.set_layer_cache_budget(1.0);
      const auto sliced = tight.layer_gradients(t, std::span<const LayerRequest<Scalar<M>>>(reqs));
      for (std::size_t r = 0; r < reqs.size(); ++r)
        BOOST_TEST((sliced[r].gradients - all[r].gradients).norm() <=
                       tol<M>(1e-12, 1e-5) * all[r].gradients.norm(),
                   "request " << r);
    }
  }
}

// Twins — requests equal but for the target (one prompt's candidate answers) — share a forward
// pass: every twin equals its single call, also when twins are uneven (one request with three
// targets, one with two, one alone, and one at another position, whose group has no second or
// third target) and under a cache budget that slices the points.
BOOST_AUTO_TEST_CASE_TEMPLATE(twin_requests_equal_single_calls, B, backends) {
  using M = typename B::Model;
  if constexpr (HasBatchedLayerGradients<M>) {
    const auto m = B::make();
    const auto t = m.trace(B::tokens());
    const int n = t.num_tokens(), L = m.num_layers();
    Rng rng(17);
    Mat<M> top = t.activations(L - 1).row(n - 1).replicate(3, 1);
    top.row(1) = testing::random_matrix<Scalar<M>>(rng, 1, m.ffn_width());
    top.row(2) *= 0.5;
    const Mat<M> low = Scalar<M>(0.25) * t.activations(0).row(n - 1).replicate(2, 1);
    const Mat<M> alone = t.activations(1).row(n - 1);
    const Mat<M> earlier = t.activations(0).row(n - 2);  // another position: a group of its own
    std::vector<LayerRequest<Scalar<M>>> reqs{
        {L - 1, n - 1, top, TokenId(7)}, {0, n - 1, low, TokenId(4)},
        {L - 1, n - 1, top, TokenId(9)}, {1, n - 1, alone, TokenId(4)},
        {0, n - 1, low, TokenId(11)},    {L - 1, n - 1, top, TokenId(7)},  // same target again
        {0, n - 2, earlier, TokenId(3)},
    };
    auto check = [&](const M& model, const char* what) {
      const auto all = model.layer_gradients(t, std::span<const LayerRequest<Scalar<M>>>(reqs));
      BOOST_REQUIRE(all.size() == reqs.size());
      for (std::size_t r = 0; r < reqs.size(); ++r) {
        const auto& q = reqs[r];
        const auto one = m.layer_gradients(t, q.layer, q.position, q.points, q.target);
        BOOST_REQUIRE(all[r].gradients.rows() == q.points.rows());
        BOOST_TEST(
            (all[r].gradients - one.gradients).norm() <= tol<M>(1e-12, 1e-5) * one.gradients.norm(),
            what << " request " << r);
        BOOST_TEST(
            (all[r].probabilities - one.probabilities).cwiseAbs().maxCoeff() < tol<M>(1e-14, 1e-6),
            what << " request " << r);
      }
      // twins with other targets have other gradients (the variants are not mixed up)
      BOOST_TEST((all[0].gradients - all[2].gradients).norm() > 1e-6 * all[0].gradients.norm());
    };
    check(m, "batched");
    if constexpr (requires(M & x) { x.set_layer_cache_budget(1.0); }) {
      auto tight = B::make();
      tight.set_layer_cache_budget(1.0);
      check(tight, "sliced");
    }
  }
}

// An intervention (one unit set, one scaled) gives the probability layer_gradients gives at the
// changed vector; an empty pattern gives the clean one. Causal models: an earlier position is
// untouched and a later one changes; a masked LM: other positions change too.
BOOST_AUTO_TEST_CASE_TEMPLATE(interventions_agree_with_layer_gradients, B, backends) {
  using M = typename B::Model;
  const auto m = B::make();
  const auto tokens = B::tokens();
  const auto t = m.trace(tokens);
  const int layer = 1, pos = t.num_tokens() - 3;
  std::vector<InterventionPattern> pats(2);
  pats[1].push_back({layer, 5, pos, InterventionOp::set, 3.0});
  pats[1].push_back({layer, 7, pos, InterventionOp::scale, 2.0});  // enhance
  pats[1].push_back({layer, 9, pos, InterventionOp::scale, 0.0});  // suppress
  Mat<M> changed = t.activations(layer).row(pos);
  changed(0, 5) = 3.0;
  changed(0, 7) *= 2.0;
  changed(0, 9) = 0.0;
  const std::vector<Query> qs{{pos, 9}, {pos + 1, 11}, {pos - 1, 4}};
  const Mat<M> p = m.probabilities(tokens, pats, qs);
  BOOST_REQUIRE(p.rows() == 2);
  BOOST_REQUIRE(p.cols() == 3);
  const Mat<M> clean = t.activations(layer).row(pos);
  BOOST_TEST(std::abs(p(0, 0) - m.layer_gradients(t, layer, pos, clean, 9).probabilities[0]) <
             tol<M>(1e-12, 1e-6));
  BOOST_TEST(std::abs(p(1, 0) - m.layer_gradients(t, layer, pos, changed, 9).probabilities[0]) <
             tol<M>(1e-12, 1e-6));
  BOOST_TEST(std::abs(p(1, 1) - p(0, 1)) / p(0, 1) > 1e-6);  // a later position sees the change
  if constexpr (causal<M>)
    BOOST_TEST(std::abs(p(1, 2) - p(0, 2)) < tol<M>(1e-15, 1e-7));  // an earlier one cannot
  else
    BOOST_TEST(std::abs(p(1, 2) - p(0, 2)) / p(0, 2) > 1e-6);  // bidirectional
}

// Causal models: a prefix's trace holds the same activations as the whole prompt's at its
// positions.
BOOST_AUTO_TEST_CASE_TEMPLATE(a_prefix_traces_the_same_activations, B, backends) {
  using M = typename B::Model;
  if constexpr (causal<M>) {
    const auto m = B::make();
    const auto tokens = B::tokens();
    const std::vector<TokenId> prefix(tokens.begin(), tokens.begin() + 4);
    const auto t = m.trace(tokens), tp = m.trace(prefix);
    for (int l = 0; l < m.num_layers(); ++l) {
      const double scale = t.activations(l).topRows(4).cwiseAbs().maxCoeff();
      BOOST_TEST((t.activations(l).topRows(4) - tp.activations(l)).cwiseAbs().maxCoeff() <=
                     tol<M>(1e-12, 1e-5) * scale,
                 "layer " << l << ": largest |a| " << scale);
    }
  }
}

// Several prompts in one probabilities() call equal one call per prompt.
BOOST_AUTO_TEST_CASE_TEMPLATE(batched_probabilities_equal_single_calls, B, backends) {
  using M = typename B::Model;
  if constexpr (HasBatchedProbabilities<M>) {
    const auto m = B::make();
    const auto a = B::tokens();
    const std::vector<TokenId> b(a.begin() + 1, a.begin() + 6);
    std::vector<InterventionPattern> pa(2), pb(1);
    pa[1].push_back({0, 3, 2, InterventionOp::scale, 0.0});
    pb[0].push_back({1, 4, 4, InterventionOp::set, -2.0});
    const std::vector<Query> qa{{int(a.size()) - 1, 9}, {3, 4}}, qb{{4, 7}};
    const std::vector<ProbabilityRequest> reqs{{a, pa, qa}, {b, pb, qb}, {a, pb, qb}};
    const auto all = m.probabilities(std::span<const ProbabilityRequest>(reqs));
    BOOST_REQUIRE(all.size() == reqs.size());
    for (std::size_t r = 0; r < reqs.size(); ++r) {
      const Mat<M> one = m.probabilities(reqs[r].tokens, reqs[r].patterns, reqs[r].queries);
      BOOST_TEST((all[r] - one).cwiseAbs().maxCoeff() < tol<M>(1e-14, 1e-6), "request " << r);
    }
  }
}

// The AMIG baseline's batched mean equals the mean of traced activations.
BOOST_AUTO_TEST_CASE_TEMPLATE(mean_site_activations_equal_traced_means, B, backends) {
  using M = typename B::Model;
  if constexpr (HasBatchedMeanActivations<M>) {
    const auto m = B::make();
    const auto a = B::tokens();
    std::vector<std::vector<TokenId>> prompts{a, a, a};
    prompts[1][2] = 3;
    prompts[2][5] = 3;
    const std::vector<int> positions{7, 2};
    const auto mean = m.mean_site_activations(prompts, positions);
    BOOST_REQUIRE(static_cast<int>(mean.size()) == m.num_layers());
    for (int l = 0; l < m.num_layers(); ++l) {
      Mat<M> want = Mat<M>::Zero(2, m.ffn_width());
      for (const auto& pr : prompts) {
        const auto t = m.trace(pr);
        for (int k = 0; k < 2; ++k)
          want.row(k) += t.activations(l).row(positions[k]) / Scalar<M>(3);
      }
      BOOST_TEST(
          (mean[static_cast<std::size_t>(l)] - want).cwiseAbs().maxCoeff() < tol<M>(1e-12, 1e-5),
          "layer " << l);
    }
  }
}

// The logits of chosen positions are those rows of the logits of every position.
BOOST_AUTO_TEST_CASE_TEMPLATE(position_logits_are_rows_of_all_logits, B, backends) {
  using M = typename B::Model;
  if constexpr (HasPositionLogits<M>) {
    const auto m = B::make();
    const auto t = m.trace(B::tokens());
    const Mat<M> all = m.logits(t);
    BOOST_REQUIRE(all.rows() == t.num_tokens());
    BOOST_REQUIRE(all.cols() == m.vocab_size());
    const std::vector<int> rows{5, 1, 5};
    const Mat<M> some = m.logits(t, rows);
    BOOST_REQUIRE(some.rows() == 3);
    for (int k = 0; k < 3; ++k)
      BOOST_TEST((some.row(k) - all.row(rows[k])).cwiseAbs().maxCoeff() < tol<M>(1e-12, 1e-4),
                 "row " << k);
    BOOST_TEST(testing::throws_with<ArgumentError>(
        [&] { (void)m.logits(t, std::vector<int>{t.num_tokens()}); }, {"position"}));
  }
}

// A value-vector edit is undone bit for bit by writing the old vector back.
BOOST_AUTO_TEST_CASE_TEMPLATE(value_vector_edits_undo_bit_exactly, B, backends) {
  using M = typename B::Model;
  auto m = B::make();
  const int d = m.hidden_size();
  const Vector<Scalar<M>> v = m.value_vector(1, 5);
  BOOST_REQUIRE(v.size() == d);
  const Vector<Scalar<M>> w =
      v * Scalar<M>(3);  // (stored: x - v * 3 in one expression may fuse into an FMA)
  m.set_value_vector(1, 5, w);
  BOOST_TEST((m.value_vector(1, 5) - w).norm() == 0.0);
  BOOST_TEST(m.value_vector(1, 4).size() == d);
  m.set_value_vector(1, 5, v);
  BOOST_TEST(std::memcmp(m.value_vector(1, 5).data(), v.data(), sizeof(Scalar<M>) * v.size()) == 0);
  BOOST_TEST(m.token_embedding(3).size() == d);
}

// Out-of-range layers, positions, token ids and wrongly shaped points are refused by name.
BOOST_AUTO_TEST_CASE_TEMPLATE(bad_arguments_are_named, B, backends) {
  using testing::throws_with;
  using M = typename B::Model;
  const auto m = B::make();
  const auto t = m.trace(B::tokens());
  const int L = m.num_layers(), n = t.num_tokens(), V = m.vocab_size();
  const Mat<M> pts = Mat<M>::Zero(1, m.ffn_width());
  const auto s = [](const char* w, int x) { return w + std::to_string(x); };
  BOOST_TEST(
      throws_with<ArgumentError>([&] { m.layer_gradients(t, L, 0, pts, 1); }, {s("layer ", L)}));
  BOOST_TEST(
      throws_with<ArgumentError>([&] { m.layer_gradients(t, 0, n, pts, 1); }, {s("position ", n)}));
  BOOST_TEST(
      throws_with<ArgumentError>([&] { m.layer_gradients(t, 0, 0, pts, V); }, {s("token id ", V)}));
  BOOST_TEST(throws_with<ShapeError>([&] { m.layer_gradients(t, 0, 0, Mat<M>::Zero(1, 3), 1); },
                                     {"points"}));
  BOOST_TEST(throws_with<ArgumentError>(
      [&] {
        m.trace(std::vector<TokenId>{1, TokenId(V)});
      },
      {s("token id ", V)}));
  BOOST_TEST(throws_with<ArgumentError>([&] { m.trace(std::vector<TokenId>{}); }, {"empty"}));
  const std::vector<InterventionPattern> bad{{{L, 0, 0, InterventionOp::scale, 0.0}}};
  const std::vector<Query> q{{0, 1}};
  BOOST_TEST(throws_with<ArgumentError>(
      [&] { m.probabilities(std::span<const TokenId>(B::tokens()), bad, q); }, {s("layer ", L)}));
  // The CPU decoders share one Trace type: a trace of another model is refused, not read out of
  // range (here: one layer short).
  if constexpr (std::is_same_v<typename M::Trace, detail::DecoderTrace<Scalar<M>>>) {
    auto other = t;
    other.resid_mid.pop_back();
    other.acts.pop_back();
    other.keys.pop_back();
    other.values.pop_back();
    BOOST_TEST(throws_with<ArgumentError>([&] { m.layer_gradients(other, 0, 0, pts, 1); },
                                          {"not one of this model"}));
    BOOST_TEST(throws_with<ArgumentError>([&] { m.probabilities(other, bad, q); },
                                          {"not one of this model"}));
  }
}

BOOST_AUTO_TEST_SUITE_END()
