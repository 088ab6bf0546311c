// Degenerate knowledge neurons: a pair planted in a random Llama-shaped model is found. Units 0
// and 1 of the last layer get identical gate / up rows (so identical activations h) and identical
// value vectors v = (2000 / h) · E_t / |E_t| pointing at the target token's embedding: together or
// alone they dominate the final RMSNorm's input, so the model predicts the target either way
// (suppressing one is harmless), while suppressing both removes the direction (harmful).
#include "knprobe/probe/degenerate.hpp"

#include <boost/test/unit_test.hpp>

#include "knprobe/model/llama.hpp"
#include "knprobe/probe/knowledge_probe.hpp"
#include "support/paths.hpp"
#include "support/random_llama.hpp"

using namespace knprobe;

namespace {

const std::vector<TokenId> k_prompt{2, 17, 5, 33, 8};
constexpr TokenId k_target = 11;

LlamaModel<double> planted() {
  auto w = testing::random_llama(false, 9);
  auto& last = w.layers.back();
  last.w_gate.row(1) = last.w_gate.row(0);
  last.w_up.row(1) = last.w_up.row(0);
  const LlamaModel<double> probe_model(w);
  const double h = probe_model.trace(k_prompt).acts.back()(4, 0);
  BOOST_REQUIRE(std::abs(h) > 1e-3);
  const VectorD e = w.embed.row(k_target).transpose();
  const VectorD v = (2000.0 / h) * e / e.norm();
  last.w_down.col(0) = v;
  last.w_down.col(1) = v;
  return LlamaModel<double>(std::move(w));
}

EncodedFact fact() {
  EncodedFact f;
  f.tokens = k_prompt;
  f.positions = {4};
  f.targets = {k_target};
  f.replaceable = {0, 1, 2, 3, 4};
  return f;
}

Attribution ig(const LlamaModel<double>& m, const EncodedFact& f) {
  AttributionOptions ao;
  ao.method = Method::ig;
  return attribute(m, f, ao, 0);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(probe_degenerate)

BOOST_AUTO_TEST_CASE(planted_pair_is_found_with_the_paper_settings) {
  const auto m = planted();
  const auto f = fact();
  const auto a = ig(m, f);
  DknOptions paper;  // T_low 0.2, T_high 0.25, pairs; candidates: the top 20 of all units here
  paper.candidates = DknCandidates::top_attributed;
  const auto r = find_degenerate(m, f, a, paper);
  BOOST_TEST(r.p0 > 0.3, "p0 " << r.p0);
  BOOST_TEST(r.candidates.size() == 20u);
  const std::vector<Neuron> pair{{2, 0}, {2, 1}};
  BOOST_TEST((std::find(r.degenerate.begin(), r.degenerate.end(), pair) != r.degenerate.end()),
             r.degenerate.size() << " degenerate sets");
  for (const auto& [n, ratio] : r.singles)
    if (n.layer == 2 && n.unit <= 1) BOOST_TEST(ratio >= 0.8);
  // Every pair was tried at most once: ≤ 20 singles + 190 pairs.
  BOOST_TEST(r.forward_passes <= 210u);
  BOOST_TEST(!r.truncated);
  // Each reported set is harmful together and harmless piecewise (checked independently).
  for (const auto& s : r.degenerate) {
    std::vector<InterventionPattern> pats{suppress(NeuronSet(s), f.positions)};
    for (const auto& n : s)
      pats.push_back(suppress(NeuronSet(std::vector<Neuron>{n}), f.positions));
    const auto p = m.probabilities(f.tokens, pats, std::vector<Query>{{4, k_target}});
    BOOST_TEST(p(0, 0) < 0.75 * r.p0);
    for (Index i = 1; i < p.rows(); ++i) BOOST_TEST(p(i, 0) >= 0.8 * r.p0);
  }
}

BOOST_AUTO_TEST_CASE(larger_sets_respect_the_pass_budget_and_batching_changes_nothing) {
  const auto m = planted();
  const auto f = fact();
  const auto a = ig(m, f);
  DknOptions o;
  o.candidates = DknCandidates::top_attributed;
  o.max_set_size = 3;
  const auto full = find_degenerate(m, f, a, o);
  o.batch = 7;
  const auto small_batches = find_degenerate(m, f, a, o);
  BOOST_TEST(full.degenerate == small_batches.degenerate);
  BOOST_TEST(full.forward_passes == small_batches.forward_passes);
  for (const auto& s : full.degenerate) {  // no reported set contains a reported smaller one
    for (const auto& t : full.degenerate)
      if (t.size() < s.size()) BOOST_TEST(!std::includes(s.begin(), s.end(), t.begin(), t.end()));
  }
  o.max_forward_passes = 30;
  const auto cut = find_degenerate(m, f, a, o);
  BOOST_TEST(cut.truncated);
  BOOST_TEST(cut.forward_passes <= 30u);
}

// docs/METHOD.md §5: the candidates are the fact's selected knowledge neurons (after the t·max
// threshold), strongest first, at most `top` — never a unit outside the selection (the committed
// example report had 21 of 120 DKN neurons that were not knowledge neurons).
BOOST_AUTO_TEST_CASE(candidates_are_the_selected_knowledge_neurons_by_default) {
  const auto m = planted();
  const auto f = fact();
  const auto a = ig(m, f);
  const auto sel = KnowledgeProbe<LlamaModel<double>>::select(a, 0.3);
  BOOST_TEST_REQUIRE(sel.ranked.size() >= 2u);
  const auto r = find_degenerate(m, f, a, DknOptions{}, &sel.ranked);
  BOOST_TEST(r.candidates.size() == std::min<std::size_t>(20, sel.ranked.size()));
  for (const auto& [n, s] : r.candidates) BOOST_TEST(sel.neurons.contains(n));
  for (std::size_t i = 1; i < r.candidates.size(); ++i)
    BOOST_TEST(r.candidates[i - 1].second >= r.candidates[i].second);
  // The top of all units reaches beyond the selection (the other method, under its own name).
  DknOptions all;
  all.candidates = DknCandidates::top_attributed;
  const auto t = find_degenerate(m, f, a, all);
  std::size_t outside = 0;
  for (const auto& [n, s] : t.candidates) outside += !sel.neurons.contains(n);
  BOOST_TEST(outside > 0u);
  // Without the selection the default cannot run: a clear error, not a silent fallback.
  BOOST_TEST(testing::throws_with<ArgumentError>([&] { (void)find_degenerate(m, f, a); },
                                                 {"selected neurons"}));
  // Fewer than 2 candidates: a result with a note, not an error.
  const std::vector<std::pair<Neuron, double>> one{sel.ranked.front()};
  const auto lone = find_degenerate(m, f, a, DknOptions{}, &one);
  BOOST_TEST(lone.degenerate.empty());
  BOOST_TEST(lone.note.find("fewer than 2") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(bad_parameters_are_named) {
  const auto m = planted();
  const auto f = fact();
  const auto a = attribute(m, f, AttributionOptions{}, 3);
  DknOptions o;
  o.t_low = 0.5;
  o.t_high = 0.25;
  BOOST_TEST(testing::throws_with<ArgumentError>([&] { find_degenerate(m, f, a, o); }, {"T_low"}));
  o = {};
  o.top = 1;
  BOOST_TEST(testing::throws_with<ArgumentError>([&] { find_degenerate(m, f, a, o); }, {"top"}));
}

BOOST_AUTO_TEST_SUITE_END()
