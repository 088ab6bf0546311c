#include "knprobe/probe/attribution.hpp"

#include <boost/test/unit_test.hpp>

#include "knprobe/model/llama.hpp"
#include "support/paths.hpp"
#include "support/random_llama.hpp"

using namespace knprobe;

namespace {
EncodedFact toy_fact() {
  EncodedFact f;
  f.tokens = {2, 17, 5, 33, 8, 41};
  f.positions = {4, 5};  // a two-token answer, teacher-forced: targets predicted at 4 and 5
  f.targets = {41, 9};
  f.replaceable = {1, 2, 3, 4};
  return f;
}

/// LlamaModel<float> with the multi-trace layer_gradients of the CUDA backends, written as one
/// call per trace: attribute_many's multi-trace path on the CPU, its calls counted.
class MultiTraceLlama : public LlamaModel<float> {
 public:
  using LlamaModel<float>::LlamaModel;
  using LlamaModel<float>::layer_gradients;
  mutable int multi_calls = 0;
  std::vector<std::vector<LayerGradients<float>>> layer_gradients(
      std::span<const TracedRequests<Trace, float>> batch) const {
    ++multi_calls;
    std::vector<std::vector<LayerGradients<float>>> out;
    for (const auto& b : batch) out.push_back(layer_gradients(*b.trace, b.requests));
    return out;
  }
};
}  // namespace

template <>
struct knprobe::ArchTraits<MultiTraceLlama> : ArchTraits<LlamaModel<float>> {};
static_assert(HasMultiTraceLayerGradients<MultiTraceLlama>);

BOOST_AUTO_TEST_SUITE(probe_attribution)

BOOST_AUTO_TEST_CASE(completeness_holds_with_an_exact_quadrature) {
  for (bool gemma : {false, true}) {
    const LlamaModel<double> m(testing::random_llama(gemma, 11));
    for (Method method : {Method::ig, Method::amig}) {
      if (gemma && method == Method::ig) continue;  // see zero_baseline_is_degenerate_for_gemma
      AttributionOptions o;
      o.method = method;
      o.quadrature = Quadrature::gauss_legendre;
      o.steps = 40;
      const auto a = attribute(m, toy_fact(), o, 1);
      BOOST_TEST(a.completeness.size() == 6u);  // 3 layers × 2 answer tokens
      for (const auto& c : a.completeness) {
        const double scale = std::max(std::abs(c.p_actual - c.p_baseline), 1e-12);
        BOOST_TEST(c.delta / scale < 1e-3, "gemma " << gemma << " layer " << c.layer << " token "
                                                    << c.token << " delta " << c.delta << " of "
                                                    << scale);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(zero_baseline_is_degenerate_for_gemma) {
  // Gemma normalises the FFN output (RMSNorm(W_down u)), so P(α a) is constant for α > 0 and
  // jumps at α = 0: the zero-baseline IG integrand is a spike at the origin that no quadrature
  // resolves. AMIG's non-zero baseline avoids it.
  const LlamaModel<double> m(testing::random_llama(true, 11));
  const auto f = toy_fact();
  const auto t = m.trace(f.tokens);
  const MatrixD a = t.acts[1].row(4);
  MatrixD pts(3, a.cols());
  pts << 1e-2 * a, 0.5 * a, a;
  const auto g = m.layer_gradients(t, 1, 4, pts, f.targets[0]);
  BOOST_TEST(std::abs(g.probabilities[0] - g.probabilities[2]) < 1e-4 * g.probabilities[2]);
  BOOST_TEST(std::abs(g.probabilities[1] - g.probabilities[2]) < 1e-8 * g.probabilities[2]);
  // ∇P · a = 0 along the ray (scale invariance), so Σ_i a_i ∂P/∂h_i vanishes there.
  BOOST_TEST(std::abs(g.gradients.row(1).dot(a.row(0))) < 1e-9);
}

BOOST_AUTO_TEST_CASE(riemann_error_shrinks_with_steps) {
  const LlamaModel<double> m(testing::random_llama(false, 12));
  AttributionOptions o;
  o.method = Method::ig;
  double prev = 1e300;
  for (int steps : {5, 20, 80}) {
    o.steps = steps;
    const double d = attribute(m, toy_fact(), o, 1).max_delta();
    BOOST_TEST(d < prev);
    prev = d;
  }
}

BOOST_AUTO_TEST_CASE(options_change_what_they_should) {
  const LlamaModel<double> m(testing::random_llama(false, 13));
  AttributionOptions o;
  o.method = Method::amig;
  const auto base = attribute(m, toy_fact(), o, 1);
  const auto again = attribute(m, toy_fact(), o, 1);
  BOOST_TEST((base.scores == again.scores));  // deterministic
  o.layers = {1};
  const auto one = attribute(m, toy_fact(), o, 1);
  BOOST_TEST(one.scores(0, 0) == 0.0);
  // The same numbers up to the GEMM blocking of a smaller batch (rows of fewer layers).
  BOOST_TEST(std::abs(one.scores(1, 3) - base.scores(1, 3)) <= 1e-12 * std::abs(base.scores(1, 3)));
  o.layers = {};
  o.aggregation = TokenAggregation::mean;
  const auto mean = attribute(m, toy_fact(), o, 1);
  BOOST_TEST(std::abs(mean.scores(2, 7) - 0.5 * base.scores(2, 7)) < 1e-15);
  o.aggregation = TokenAggregation::sum;
  o.method = Method::ig;
  const auto ig = attribute(m, toy_fact(), o, 1);
  o.paper_compat = true;
  const auto compat = attribute(m, toy_fact(), o, 1);
  BOOST_TEST((ig.scores == compat.scores));  // with b = 0, a_i = a_i − b_i
  o.method = Method::amig;
  const auto amig_compat = attribute(m, toy_fact(), o, 1);
  BOOST_TEST(!(amig_compat.scores == base.scores));
  o.layers = {5};
  BOOST_CHECK_THROW(attribute(m, toy_fact(), o, 1), ArgumentError);
  o.layers = {};
  o.steps = 0;
  BOOST_CHECK_THROW(attribute(m, toy_fact(), o, 1), ArgumentError);
}

// Candidates of one claim — the same prompt and answer positions, other answer tokens — are
// attributed together: each result equals attribute() of that candidate alone, bit for bit (the
// twins' requests run the same rows as a single call), in float (the CLI's type) and double;
// facts that differ in their prompt are refused.
BOOST_AUTO_TEST_CASE(shared_attribution_equals_single_attributions) {
  const LlamaModel<double> md(testing::random_llama(true, 14));
  const LlamaModel<float> mf(testing::random_llama(true, 14).cast<float>());
  std::vector<EncodedFact> cands(4, toy_fact());
  cands[1].targets = {7, 9};
  cands[2].targets = {41, 3};
  cands[3].targets = {12, 30};
  for (Method method : {Method::ig, Method::amig}) {
    AttributionOptions o;
    o.method = method;
    o.steps = 6;
    o.layers = {2, 0};
    auto same = [&](const auto& m) {
      const auto all = attribute_shared(m, std::span<const EncodedFact>(cands), o, 1);
      BOOST_REQUIRE(all.size() == cands.size());
      for (std::size_t i = 0; i < cands.size(); ++i) {
        const auto one = attribute(m, cands[i], o, 1);
        BOOST_TEST((all[i].scores == one.scores), "candidate " << i);
        BOOST_REQUIRE(all[i].completeness.size() == one.completeness.size());
        for (std::size_t k = 0; k < one.completeness.size(); ++k) {
          BOOST_TEST(all[i].completeness[k].p_actual == one.completeness[k].p_actual);
          BOOST_TEST(all[i].completeness[k].delta == one.completeness[k].delta);
        }
        BOOST_TEST(all[i].layers == one.layers);
      }
      BOOST_TEST(!(all[0].scores == all[1].scores));  // other targets, other scores
    };
    same(md);
    same(mf);
  }
  auto other = cands;
  other[2].tokens[1] = 3;
  BOOST_CHECK_THROW(attribute_shared(md, std::span<const EncodedFact>(other), {}, 1),
                    ArgumentError);
}

// Independent facts attributed together (attribute_many, attribute_groups): on the CPU drivers,
// which run the facts' traces one after another, each result is attribute() of that fact alone
// bit for bit — prompts of different lengths, a two-token answer next to one-token answers (the
// second answer token's round has one fact), sum and mean over answer tokens, IG and AMIG; a
// group of twins next to single facts equals attribute_shared; an empty batch is refused. The
// multi-trace path of the CUDA backends is checked against attribute in tests/cuda.
static_assert(!HasMultiTraceLayerGradients<LlamaModel<float>>);
BOOST_AUTO_TEST_CASE(many_facts_equal_single_attributions) {
  const LlamaModel<float> m(testing::random_llama(true, 15).cast<float>());
  std::vector<EncodedFact> facts(3, toy_fact());
  facts[1].tokens = {2, 9, 30, 7};
  facts[1].positions = {3};
  facts[1].targets = {12};
  facts[1].replaceable = {1, 2};
  facts[2].tokens = {4, 11, 6, 20, 3};
  facts[2].positions = {4};
  facts[2].targets = {8};
  facts[2].replaceable = {1, 2, 3};
  for (Method method : {Method::ig, Method::amig})
    for (TokenAggregation agg : {TokenAggregation::sum, TokenAggregation::mean}) {
      AttributionOptions o;
      o.method = method;
      o.aggregation = agg;
      o.steps = 5;
      const auto many = attribute_many(m, std::span<const EncodedFact>(facts), o, 1);
      BOOST_REQUIRE(many.size() == facts.size());
      for (std::size_t i = 0; i < facts.size(); ++i) {
        const auto one = attribute(m, facts[i], o, 1);
        BOOST_TEST((many[i].scores == one.scores), "fact " << i);
        BOOST_REQUIRE(many[i].completeness.size() == one.completeness.size());
        for (std::size_t k = 0; k < one.completeness.size(); ++k) {
          BOOST_TEST(many[i].completeness[k].token == one.completeness[k].token);
          BOOST_TEST(many[i].completeness[k].delta == one.completeness[k].delta);
        }
      }
    }
  // The multi-trace path (the CUDA backends' form, here one call per trace): one call per answer
  // token that more than one fact has, each result bit-identical to attribute alone.
  const MultiTraceLlama mt(testing::random_llama(true, 15).cast<float>());
  for (Method method : {Method::ig, Method::amig}) {
    AttributionOptions o;
    o.method = method;
    o.steps = 5;
    o.aggregation = TokenAggregation::mean;
    mt.multi_calls = 0;
    const auto many = attribute_many(mt, std::span<const EncodedFact>(facts), o, 1);
    BOOST_TEST(mt.multi_calls == 1);  // answer token 0: three facts; token 1: one
    for (std::size_t i = 0; i < facts.size(); ++i) {
      const auto one = attribute(m, facts[i], o, 1);
      BOOST_TEST((many[i].scores == one.scores), "multi-trace, fact " << i);
      BOOST_REQUIRE(many[i].completeness.size() == one.completeness.size());
      for (std::size_t k = 0; k < one.completeness.size(); ++k)
        BOOST_TEST(many[i].completeness[k].delta == one.completeness[k].delta);
    }
  }
  auto bad = facts;
  bad[1].targets.clear();
  BOOST_TEST(testing::throws_with<ArgumentError>(
      [&] { attribute_many(m, std::span<const EncodedFact>(bad), {}, 1); },
      {"no tokens", "group 1 of the batch"}));
  std::vector<EncodedFact> twins(2, toy_fact());
  twins[1].targets = {7, 9};
  const std::span<const EncodedFact> groups[] = {std::span<const EncodedFact>(twins),
                                                 std::span<const EncodedFact>(&facts[1], 1)};
  const auto g = attribute_groups(m, std::span<const std::span<const EncodedFact>>(groups), {}, 1);
  const auto shared = attribute_shared(m, std::span<const EncodedFact>(twins), {}, 1);
  BOOST_REQUIRE(g.size() == 2 && g[0].size() == 2 && g[1].size() == 1);
  BOOST_TEST((g[0][1].scores == shared[1].scores));
  BOOST_TEST((g[1][0].scores == attribute(m, facts[1], {}, 1).scores));
  BOOST_CHECK_THROW(attribute_many(m, std::span<const EncodedFact>(), {}, 1), ArgumentError);
}

BOOST_AUTO_TEST_SUITE_END()
