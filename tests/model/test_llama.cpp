#include "knprobe/model/llama.hpp"

#include <boost/test/unit_test.hpp>

#include "support/finite_diff.hpp"
#include "support/paths.hpp"
#include "support/random_llama.hpp"

using namespace knprobe;

KNPROBE_ASSERT_PROBEABLE(LlamaModel<float>);
KNPROBE_ASSERT_PROBEABLE(LlamaModel<double>);
KNPROBE_ASSERT_PROBEABLE(QuantizedLlamaModel);

namespace {
const std::vector<TokenId> k_llama_tokens{2, 17, 5, 33, 8, 41, 12};
}

BOOST_AUTO_TEST_SUITE(model_llama)

// An attribution-shaped batch: several requests at one position (layers given out of order, two
// at the same layer) share every layer above their start, plus one at another position; each
// equals its single call. A budget that fits one point at a time slices the points and gives the
// same numbers.
BOOST_AUTO_TEST_CASE(shared_layers_and_point_slices_equal_single_calls) {
  LlamaModel<double> m(testing::random_llama(true, 5));
  const auto t = m.trace(k_llama_tokens);
  std::vector<LayerRequest<double>> reqs;
  Rng rng(11);
  for (const int l : {2, 0, 1, 1}) {
    MatrixD pts = t.acts[l].row(6).replicate(3, 1);
    pts.row(2) = testing::random_matrix(rng, 1, m.ffn_width());
    reqs.push_back({l, 6, pts, TokenId(7 + l)});
  }
  reqs.push_back({0, 4, t.acts[0].row(4).replicate(2, 1), TokenId(5)});
  auto check = [&](const char* what) {
    const auto all = m.layer_gradients(t, std::span<const LayerRequest<double>>(reqs));
    for (std::size_t r = 0; r < reqs.size(); ++r) {
      const auto one =
          m.layer_gradients(t, reqs[r].layer, reqs[r].position, reqs[r].points, reqs[r].target);
      BOOST_TEST((all[r].gradients - one.gradients).norm() <= 1e-12 * one.gradients.norm(),
                 what << " request " << r);
      BOOST_TEST((all[r].probabilities - one.probabilities).cwiseAbs().maxCoeff() < 1e-14,
                 what << " request " << r);
    }
  };
  check("one batch");
  m.set_layer_cache_budget(1.0);  // less than one point: slices of one row
  check("sliced");
  BOOST_TEST(testing::throws_with<ArgumentError>([&] { m.set_layer_cache_budget(0); },
                                                 {"layer cache budget"}));
  std::vector<LayerRequest<double>> bad = reqs;
  bad.back().layer = 99;  // checked before any work
  BOOST_TEST(testing::throws_with<ArgumentError>(
      [&] { m.layer_gradients(t, std::span<const LayerRequest<double>>(bad)); }, {"layer 99"}));
}

// Prompts of different lengths (one twice), requests starting at different layers and
// positions, one without interventions, one without patterns: each result equals its single call
// (Gemma: sliding window, sandwich norms, per-head norms; Llama: plain), in one group or in
// groups of one under a small cache budget. A bad request in the batch is refused before any
// work, naming the request and what is wrong.
BOOST_AUTO_TEST_CASE(batched_probabilities_equal_single_calls) {
  for (bool gemma : {true, false}) {
    LlamaModel<double> m(testing::random_llama(gemma, 9));
    const std::vector<TokenId> a = k_llama_tokens, b{3, 9, 22, 4}, c{2, 30, 31, 32, 33, 34, 35, 6};
    std::vector<InterventionPattern> pa{
        {},
        {{1, 5, 6, InterventionOp::scale, 0.0}},
        {{0, 2, 3, InterventionOp::set, 1.5}, {2, 7, 6, InterventionOp::scale, 2.0}}},
        pb{{{2, 1, 3, InterventionOp::scale, 3.0}}, {}}, pc{{{0, 4, 0, InterventionOp::set, -2.0}}},
        none{}, clean{{}};
    // qa's query at 1 lies before pa's first intervened position (3): read from the trace.
    std::vector<Query> qa{{6, 11}, {3, 4}, {1, 4}}, qb{{3, 8}}, qc{{7, 1}, {2, 5}, {0, 9}};
    // 130 patterns × 3 queries: more rows than one output-head piece (256).
    const std::vector<InterventionPattern> many(130, pa[2]);
    const std::vector<ProbabilityRequest> reqs{{a, pa, qa},    {b, pb, qb},   {c, pc, qc},
                                               {a, clean, qa}, {b, none, qb}, {a, pb, qa},
                                               {c, many, qc}};
    auto check = [&](const char* what) {
      const auto all = m.probabilities(std::span<const ProbabilityRequest>(reqs));
      BOOST_TEST_REQUIRE(all.size() == reqs.size());
      for (std::size_t r = 0; r < reqs.size(); ++r) {
        const auto one = m.probabilities(reqs[r].tokens, reqs[r].patterns, reqs[r].queries);
        BOOST_TEST_REQUIRE(all[r].rows() == one.rows());
        BOOST_TEST_REQUIRE(all[r].cols() == one.cols());
        if (one.size())
          BOOST_TEST((all[r] - one).cwiseAbs().maxCoeff() < 1e-14,
                     what << " gemma " << gemma << " request " << r);
      }
      return all;
    };
    const auto all = check("one group");
    m.set_layer_cache_budget(1.0);  // every request a group of its own
    (void)check("groups of one");
    m.set_layer_cache_budget(2.0 * (1 << 30));
    // Interventions change something (else the check above could not fail).
    BOOST_TEST(std::abs(all[0](1, 0) - all[0](0, 0)) > 1e-6);
    std::vector<InterventionPattern> bad{{{1, 5, 9, InterventionOp::scale, 0.0}}};
    const std::vector<ProbabilityRequest> with_bad{{a, pa, qa}, {b, bad, qb}};
    BOOST_TEST(testing::throws_with<ArgumentError>(
        [&] { m.probabilities(std::span<const ProbabilityRequest>(with_bad)); },
        {"request 1", "intervention position 9"}));
    const std::vector<TokenId> hostile{2, 1 << 30};
    const std::vector<ProbabilityRequest> with_hostile{{a, pa, qa}, {hostile, clean, qb}};
    BOOST_TEST(testing::throws_with<ArgumentError>(
        [&] { m.probabilities(std::span<const ProbabilityRequest>(with_hostile)); },
        {"request 1", "1073741824", "position 1"}));
    std::vector<InterventionPattern> deep{{{99, 5, 1, InterventionOp::scale, 0.0}}};
    const std::vector<ProbabilityRequest> with_deep{{a, pa, qa}, {b, deep, qb}};
    BOOST_TEST(testing::throws_with<ArgumentError>(
        [&] { m.probabilities(std::span<const ProbabilityRequest>(with_deep)); },
        {"request 1", "layer 99"}));
    const std::vector<Query> far{{5, 1}};
    const std::vector<ProbabilityRequest> with_far{{b, pb, far}};
    BOOST_TEST(testing::throws_with<ArgumentError>(
        [&] { m.probabilities(std::span<const ProbabilityRequest>(with_far)); },
        {"query position 5"}));
  }
}

// The AMIG baseline from stacked passes (all prompts at once, or one per pass under a small
// budget) equals the mean of one trace per prompt.
BOOST_AUTO_TEST_CASE(mean_site_activations_equal_traced_mean) {
  LlamaModel<double> m(testing::random_llama(true, 4));
  const std::vector<std::vector<TokenId>> prompts{
      {2, 17, 5, 33}, {2, 1, 5, 33}, {2, 17, 1, 33}, {2, 17, 5, 1}};
  const std::vector<int> positions{3, 1};
  const auto mean = m.mean_site_activations(prompts, positions);
  m.set_layer_cache_budget(1.0);  // one prompt per pass
  const auto sliced = m.mean_site_activations(prompts, positions);
  BOOST_TEST_REQUIRE(mean.size() == std::size_t(m.num_layers()));
  for (int l = 0; l < m.num_layers(); ++l) {
    BOOST_TEST((sliced[l] - mean[l]).cwiseAbs().maxCoeff() < 1e-14, "layer " << l);
    MatrixD want = MatrixD::Zero(2, m.ffn_width());
    for (const auto& p : prompts) {
      const auto t = m.trace(p);
      for (int k = 0; k < 2; ++k) want.row(k) += t.acts[l].row(positions[k]);
    }
    want /= 4.0;
    BOOST_TEST((mean[l] - want).cwiseAbs().maxCoeff() < 1e-14, "layer " << l);
  }
  const std::vector<std::vector<TokenId>> ragged{{2, 17, 5}, {2, 17}};
  BOOST_TEST(testing::throws_with<ArgumentError>(
      [&] { m.mean_site_activations(ragged, std::vector<int>{1}); }, {"different lengths"}));
  BOOST_TEST(testing::throws_with<ArgumentError>(
      [&] { m.mean_site_activations(prompts, std::vector<int>{4}); }, {"position 4"}));
}

BOOST_AUTO_TEST_CASE(float_gradients_agree_with_double) {
  const auto w = testing::random_llama(true);
  const LlamaModel<double> md(w);
  const LlamaModel<float> mf(w.cast<float>());
  const auto td = md.trace(k_llama_tokens);
  const auto tf = mf.trace(k_llama_tokens);
  const auto gd = md.layer_gradients(td, 1, 6, td.acts[1].row(6), 3);
  const auto gf = mf.layer_gradients(tf, 1, 6, tf.acts[1].row(6), 3);
  BOOST_TEST((gf.gradients.cast<double>() - gd.gradients).norm() / gd.gradients.norm() < 1e-4);
}

BOOST_AUTO_TEST_CASE(interventions_agree_with_layer_gradients_and_causality) {
  const LlamaModel<double> m(testing::random_llama(true, 7));
  const auto t = m.trace(k_llama_tokens);
  const int layer = 1, pos = 3;
  // Pattern 0: nothing. Pattern 1: unit 5 set to 3, unit 7 doubled. (Scaling *every* unit would
  // change nothing: Gemma's post-FFN RMSNorm makes the FFN output scale-invariant.)
  std::vector<InterventionPattern> pats(2);
  pats[1].push_back({layer, 5, pos, InterventionOp::set, 3.0});
  pats[1].push_back({layer, 7, pos, InterventionOp::scale, 2.0});
  MatrixD changed = t.acts[layer].row(pos);
  changed(0, 5) = 3.0;
  changed(0, 7) *= 2.0;
  // (Layer 2 slides with window 3: position 5 sees position 3, position 6 does not.)
  const std::vector<Query> qs{{pos, 9}, {5, 11}, {1, 4}, {6, 2}};
  const MatrixD p = m.probabilities(t, pats, qs);
  for (int q = 0; q < 4; ++q)
    BOOST_TEST(std::abs(p(0, q) - m.probability(t, qs[q].position, qs[q].target)) < 1e-12);
  const auto lg = m.layer_gradients(t, layer, pos, changed, 9);
  BOOST_TEST(std::abs(p(1, 0) - lg.probabilities[0]) < 1e-12);
  BOOST_TEST(std::abs(p(1, 2) - p(0, 2)) < 1e-15);  // position 1 < 3: unaffected
  BOOST_TEST(std::abs(p(1, 1) - p(0, 1)) / p(0, 1) > 1e-6, p(0, 1) << " " << p(1, 1));  // affected
  BOOST_TEST(std::abs(p(1, 3) - p(0, 3)) < 1e-15);  // outside the window: unaffected
  // Causality of the trace itself: a prefix gives the same distribution at its positions.
  const std::vector<TokenId> prefix(k_llama_tokens.begin(), k_llama_tokens.begin() + 4);
  const auto tp = m.trace(prefix);
  BOOST_TEST(std::abs(m.probability(tp, 3, 9) - m.probability(t, 3, 9)) < 1e-12);
}

// (Bad arguments: the conformance suite, test_conformance.cpp.)
BOOST_AUTO_TEST_CASE(bad_weights_are_named) {
  using testing::throws_with;
  auto w = testing::random_llama(false);
  w.layers[1].w_up = MatrixD::Zero(3, 3);
  BOOST_TEST(throws_with<ShapeError>([&] { LlamaModel<double> bad(w); }, {"layer 1 ffn up"}));
}

// The same weights as F32 blocks of QuantizedMatrix (tile-by-tile products) against the dense
// float model: trace, logits, batched gradients, interventions, value vectors.
BOOST_AUTO_TEST_CASE(quantized_storage_matches_dense) {
  for (bool gemma : {false, true}) {
    const auto w = testing::random_llama(gemma, 21).cast<float>();
    const LlamaModel<float> md(w);
    const QuantizedLlamaModel mq(w.to_quantized_storage());
    const auto td = md.trace(k_llama_tokens);
    const auto tq = mq.trace(k_llama_tokens);
    const MatrixF zd = md.logits(td), zq = mq.logits(tq);
    BOOST_TEST((zq - zd).norm() / zd.norm() < 1e-5, "gemma " << gemma);
    std::vector<LayerRequest<float>> reqs;
    for (int l = 0; l < 3; ++l)
      reqs.push_back({l, 6 - l, td.acts[l].row(6 - l).replicate(3, 1), TokenId(7 + l)});
    const auto gd = md.layer_gradients(td, std::span<const LayerRequest<float>>(reqs));
    const auto gq = mq.layer_gradients(tq, std::span<const LayerRequest<float>>(reqs));
    for (std::size_t r = 0; r < reqs.size(); ++r) {
      BOOST_TEST((gq[r].gradients - gd[r].gradients).norm() / gd[r].gradients.norm() < 1e-4);
      BOOST_TEST(std::abs(gq[r].probabilities[0] - gd[r].probabilities[0]) < 1e-6);
    }
    std::vector<InterventionPattern> pats(2);
    pats[1].push_back({1, 5, 3, InterventionOp::set, 3.0});
    const std::vector<Query> qs{{3, 9}, {6, 2}};
    BOOST_TEST(
        (mq.probabilities(tq, pats, qs) - md.probabilities(td, pats, qs)).cwiseAbs().maxCoeff() <
        1e-6);
    BOOST_TEST((mq.value_vector(2, 5) - md.value_vector(2, 5)).norm() == 0.0f);
    BOOST_TEST((mq.token_embedding(3) - md.token_embedding(3)).norm() == 0.0f);
  }
}

BOOST_AUTO_TEST_CASE(quantized_value_vector_edits_undo_bit_exactly) {
  const auto w = testing::random_llama(true, 22).cast<float>();
  QuantizedLlamaModel m(w.to_quantized_storage());
  LlamaModel<float> dense(w);
  const auto t0 = m.trace(k_llama_tokens);
  const MatrixF z0 = m.logits(t0);
  const VectorF old = m.value_vector(1, 4);
  const VectorF v = 3.0f * old + VectorF::Ones(old.size());
  m.set_value_vector(1, 4, v);
  dense.set_value_vector(1, 4, v);
  BOOST_TEST((m.value_vector(1, 4).array() == v.array()).all());
  const MatrixF z1 = m.logits(m.trace(k_llama_tokens)),
                zd = dense.logits(dense.trace(k_llama_tokens));
  BOOST_TEST((z1 - z0).norm() > 1e-3);              // the edit acts
  BOOST_TEST((z1 - zd).norm() / zd.norm() < 1e-5);  // as on the dense model
  m.set_value_vector(1, 4, old);
  BOOST_TEST(m.weights().layers[1].w_down.edited_columns() == 0u);
  const MatrixF z2 = m.logits(m.trace(k_llama_tokens));
  BOOST_TEST((z2.array() == z0.array()).all());  // bit-exact
}

BOOST_AUTO_TEST_SUITE_END()
