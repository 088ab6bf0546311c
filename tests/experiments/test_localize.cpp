// experiments/localize.hpp on the real stories260K model and 12 facts of two relations: K
// unrelated facts per (fact, language) — seeded, of other relations, distinct, different per fact
// (the old control used one prompt per relation) —, the controls matched on layer histogram and on
// activation magnitude, Dai's refinement against generic neurons, and screening by rank /
// probability with balance over relations and answers.
#include "knprobe/experiments/localize.hpp"

#include <boost/test/unit_test.hpp>
#include <set>

#include "knprobe/data/facts.hpp"
#include "knprobe/model/llama.hpp"
#include "knprobe/tokenize/llama2c_tokenizer.hpp"
#include "support/paths.hpp"

using namespace knprobe;

namespace {

struct Stories {
  LlamaModel<float> model = LlamaModel<float>::load(testing::stories_dir() / "stories260K.bin");
  Llama2cTokenizer tok{testing::stories_dir() / "tok512.bin", model.vocab_size()};
  std::vector<Fact> facts =
      read_facts(testing::data_dir() / "facts" / "stories_factcheck.jsonl").facts;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(experiments_localize)

BOOST_AUTO_TEST_CASE(k_unrelated_facts_are_distinct_of_other_relations_and_vary_by_fact) {
  const Stories s;
  const KnowledgeProbe probe(s.model, s.tok);
  BOOST_REQUIRE(s.facts.size() == 12u);
  std::map<std::string, std::string> relation;
  for (const auto& f : s.facts) relation[f.id] = f.relation;
  std::set<std::vector<std::string>> draws;
  for (std::size_t i = 0; i < s.facts.size(); ++i) {
    const auto u = detail::unrelated_facts(probe, s.facts, i, "en", 4, 42);
    BOOST_TEST_REQUIRE(u.size() == 4u);
    std::vector<std::string> ids;
    for (const auto& [id, e] : u) {
      BOOST_TEST(relation.at(id) != s.facts[i].relation);
      ids.push_back(id);
    }
    BOOST_TEST(std::set<std::string>(ids.begin(), ids.end()).size() == 4u);  // distinct
    draws.insert(ids);
    // deterministic for a seed; another seed draws others
    std::vector<std::string> again;
    for (const auto& [id, e] : detail::unrelated_facts(probe, s.facts, i, "en", 4, 42))
      again.push_back(id);
    BOOST_TEST((again == ids));
  }
  // The facts of one relation do not share one unrelated prompt (the defect): many distinct draws.
  BOOST_TEST(draws.size() >= 6u, draws.size() << " distinct draws for 12 facts");
  // More than the facts of other relations (6): a clear error naming how many there are.
  BOOST_TEST(testing::throws_with<ArgumentError>(
      [&] { (void)detail::unrelated_facts(probe, s.facts, 0, "en", 7, 42); },
      {"only 6 fact(s) of other relations"}));
}

// Localizing a few facts of one relation (--limit): the unrelated facts come from the pool of
// every fact read, not from the localized facts (which have no other relation to offer).
BOOST_AUTO_TEST_CASE(unrelated_facts_are_drawn_from_the_pool_before_the_limit) {
  const Stories s;
  const KnowledgeProbe probe(s.model, s.tok);
  const std::vector<Fact> kept(s.facts.begin(), s.facts.begin() + 2);
  BOOST_TEST_REQUIRE(kept[0].relation == kept[1].relation);
  LocalizeOptions o;
  o.languages = {"en"};
  o.thresholds = {{"en", 0.3}};
  o.attribution.steps = 4;
  o.unrelated = 4;
  const auto alone = localize(probe, kept, o);
  BOOST_TEST_REQUIRE(alone.facts.size() == 2u);
  const auto& ra = alone.facts[0].languages.at("en").suppress;
  BOOST_TEST(ra.unrelated_facts.empty());
  BOOST_TEST(!ra.unrelated.has_value());
  o.unrelated_pool = &s.facts;
  const auto pooled = localize(probe, kept, o);
  std::map<std::string, std::string> relation;
  for (const auto& f : s.facts) relation[f.id] = f.relation;
  for (const auto& f : pooled.facts) {
    const auto& r = f.languages.at("en").suppress;
    BOOST_TEST(r.unrelated_facts.size() == 4u);
    BOOST_TEST(r.unrelated.has_value());
    for (const auto& id : r.unrelated_facts) BOOST_TEST(relation.at(id) != f.relation);
  }
}

BOOST_AUTO_TEST_CASE(magnitude_control_matches_the_layer_and_the_activation_rank) {
  const Stories s;
  const KnowledgeProbe probe(s.model, s.tok);
  const auto f = probe.encode(s.facts[0].prompts.at("en"), s.facts[0].answers.at("en"));
  const auto sel = probe.select(probe.attribute(f), 0.2);
  BOOST_REQUIRE(!sel.neurons.empty());
  const double band = 0.05;
  const auto ctl = probe.magnitude_control(sel.neurons, f, 7, band);
  BOOST_TEST(ctl.size() == sel.neurons.size());
  BOOST_TEST((ctl.layer_histogram() == sel.neurons.layer_histogram()));
  for (const auto& n : ctl) BOOST_TEST(!sel.neurons.contains(n));
  // each control unit's |activation| rank is within the window of some selected unit of its layer
  const auto trace = s.model.trace(f.tokens);
  const int W = s.model.ffn_width(), w = std::max(1, static_cast<int>(band * W));
  for (const auto& [layer, count] : ctl.layer_histogram()) {
    const auto a = trace.activations(layer);
    std::vector<std::pair<double, int>> mag;
    for (int j = 0; j < W; ++j) {
      double m = 0;
      for (int p : f.positions) m += std::abs(static_cast<double>(a(p, j)));
      mag.push_back({m, j});
    }
    std::sort(mag.begin(), mag.end());
    std::vector<int> rank(static_cast<std::size_t>(W));
    for (int r = 0; r < W; ++r) rank[static_cast<std::size_t>(mag[r].second)] = r;
    for (const auto& c : ctl) {
      if (c.layer != layer) continue;
      bool near = false;
      for (const auto& n : sel.neurons)
        near |= n.layer == layer && std::abs(rank[c.unit] - rank[n.unit]) <= w;
      BOOST_TEST(near, "L" << c.layer << "." << c.unit << " is not matched on |activation|");
    }
  }
  // deterministic for a seed
  BOOST_TEST((probe.magnitude_control(sel.neurons, f, 7, band) == ctl));
  BOOST_CHECK_THROW(probe.magnitude_control(sel.neurons, f, 7, 0.0), ArgumentError);
}

BOOST_AUTO_TEST_CASE(generic_neurons_shared_with_other_relations_are_dropped) {
  // Hand-made results: neuron G is selected for every fact of both relations, A only for
  // relation a's facts, B only for b's.
  auto result = [](std::vector<Neuron> ns) {
    LanguageResult r;
    r.language = "en";
    for (const auto& n : ns) r.selection.ranked.push_back({n, 1.0});
    r.selection.neurons = NeuronSet(ns);
    return r;
  };
  const Neuron G{0, 1}, A{1, 2}, B{1, 3};
  std::vector<FactResult> facts;
  for (int k = 0; k < 3; ++k) {
    FactResult fa{"a" + std::to_string(k), "a", {}, {}, false, {}, {}};
    fa.languages.emplace("en", result({G, A}));
    facts.push_back(fa);
    FactResult fb{"b" + std::to_string(k), "b", {}, {}, false, {}, {}};
    fb.languages.emplace("en", result({G, B}));
    facts.push_back(fb);
  }
  detail::drop_generic_neurons(facts, 0.5);
  for (const auto& f : facts) {
    const auto& r = f.languages.at("en");
    BOOST_TEST(!r.selection.neurons.contains(G));
    BOOST_TEST(r.selection.neurons.size() == 1u);
    BOOST_TEST(r.dropped_generic.size() == 1u);
  }
}

BOOST_AUTO_TEST_CASE(screening_by_rank_and_probability_balanced_over_relations) {
  const Stories s;
  const KnowledgeProbe probe(s.model, s.tok);
  AnswerableOptions o;
  o.languages = {"en"};
  std::vector<SkippedFact> skipped;
  const auto top1 = answerable_facts(probe, s.facts, o, skipped);
  o.rule.kind = ScreenRule::Kind::rank;
  o.rule.max_rank = 50;
  skipped.clear();
  const auto top50 = answerable_facts(probe, s.facts, o, skipped);
  BOOST_TEST(top50.size() >= top1.size());  // a looser rule keeps at least as many
  o.rule.kind = ScreenRule::Kind::probability;
  o.rule.min_probability = 1.0;  // nothing is certain
  skipped.clear();
  BOOST_TEST(answerable_facts(probe, s.facts, o, skipped).empty());
  BOOST_TEST(skipped.front().reason.find("P(answer) =") != std::string::npos);
  // Balance: at most 2 per relation, visited round-robin, so a limit of 4 takes 2 + 2.
  o.rule.kind = ScreenRule::Kind::rank;
  o.rule.max_rank = 512;  // every token is within the vocabulary: all pass the rule
  o.per_relation = 2;
  o.limit = 4;
  skipped.clear();
  const auto kept = answerable_facts(probe, s.facts, o, skipped);
  BOOST_TEST(kept.size() == 4u);
  std::map<std::string, int> per;
  for (const auto& f : kept) ++per[f.relation];
  BOOST_TEST(per["name"] == 2);
  BOOST_TEST(per["place"] == 2);
  const ScreenRule rank5{ScreenRule::Kind::rank, 5, 0, 0};
  BOOST_TEST(rank5.describe() == "rank<=5");
}

// An interrupted scan resumes: every new verdict is reported as it is decided, and a rerun given
// those verdicts screens nothing again and keeps the same facts; a known verdict is used as it
// is, and a fact whose text changed is screened again (its key differs).
BOOST_AUTO_TEST_CASE(screening_resumes_from_known_verdicts) {
  const Stories s;
  const KnowledgeProbe probe(s.model, s.tok);
  AnswerableOptions o;
  o.languages = {"en"};
  o.rule.kind = ScreenRule::Kind::rank;
  o.rule.max_rank = 50;
  std::map<std::string, std::pair<std::string, std::string>> seen;
  o.on_verdict = [&](const std::string& key, const std::string& lang, const std::string& why) {
    BOOST_TEST(!seen.count(key));
    seen[key] = {lang, why};
  };
  std::vector<SkippedFact> skipped;
  const auto first = answerable_facts(probe, s.facts, o, skipped);
  BOOST_TEST(seen.size() == s.facts.size());
  o.known = seen;
  std::size_t screened = 0;
  o.on_verdict = [&](const std::string&, const std::string&, const std::string&) { ++screened; };
  skipped.clear();
  const auto again = answerable_facts(probe, s.facts, o, skipped);
  BOOST_TEST(screened == 0u);
  BOOST_TEST(again.size() == first.size());
  for (std::size_t i = 0; i < std::min(again.size(), first.size()); ++i)
    BOOST_TEST(again[i].id == first[i].id);
  // A known verdict is taken as it is (here: one that refuses the first kept fact).
  BOOST_REQUIRE(!first.empty());
  o.known[screening_key(first.front(), o.languages)] = {"en", "cached: refused"};
  skipped.clear();
  const auto refused = answerable_facts(probe, s.facts, o, skipped);
  BOOST_TEST(refused.size() == first.size() - 1);
  BOOST_TEST(std::any_of(skipped.begin(), skipped.end(),
                         [](const SkippedFact& k) { return k.reason == "cached: refused"; }));
  // A changed answer is a new key: screened again.
  auto changed = s.facts;
  changed.front().answers["en"] += " x";
  skipped.clear();
  (void)answerable_facts(probe, changed, o, skipped);
  BOOST_TEST(screened == 1u);
}

BOOST_AUTO_TEST_SUITE_END()
