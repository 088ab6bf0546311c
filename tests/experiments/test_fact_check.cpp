// Fact-checking with relation DKN sets: the metrics against hand counts, the threshold fit, the
// wrong-object draw and the split, then the whole experiment on the real stories260K model
// (determinism, claim bookkeeping, skipped relations and facts, bad options).
#include "knprobe/experiments/fact_check.hpp"

#include <algorithm>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <map>
#include <set>

#include "knprobe/data/facts.hpp"
#include "knprobe/model/llama.hpp"
#include "knprobe/tokenize/llama2c_tokenizer.hpp"
#include "support/paths.hpp"

using namespace knprobe;

namespace {

Fact fact(const std::string& id, const std::string& rel, const std::string& answer) {
  return {id, rel, {{"en", "p " + id}}, {{"en", answer}}};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(experiments_fact_check)

BOOST_AUTO_TEST_CASE(confusion_metrics_match_hand_counts) {
  Confusion c;
  for (int i = 0; i < 3; ++i) c.add(true, true);    // TP
  c.add(false, true);                               // FP
  for (int i = 0; i < 2; ++i) c.add(true, false);   // FN
  for (int i = 0; i < 4; ++i) c.add(false, false);  // TN
  BOOST_TEST(c.tp == 3u);
  BOOST_TEST(c.fp == 1u);
  BOOST_TEST(c.fn == 2u);
  BOOST_TEST(c.tn == 4u);
  BOOST_TEST(c.precision() == 0.75, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(c.recall() == 0.6, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(c.f1() == 2 * 0.75 * 0.6 / 1.35, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(c.accuracy() == 0.7, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(c.precision_ref() == 0.5, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(c.f1_ref() == 2 * 0.5 * 0.6 / 1.1, boost::test_tools::tolerance(1e-12));
  // A rate over nothing is undefined, not 0 (a silently wrong number): precision when nothing
  // is accepted, recall without true claims; F1 is 0 when true claims were all rejected.
  BOOST_TEST(std::isnan(Confusion{}.f1()));
  BOOST_TEST(std::isnan(Confusion{}.accuracy()));
  Confusion none;
  none.add(true, false);
  none.add(false, false);
  BOOST_TEST(std::isnan(none.precision()));
  BOOST_TEST(none.recall() == 0.0);
  BOOST_TEST(none.f1() == 0.0);
  BOOST_TEST(none.f1_ref() == 0.0);
  BOOST_TEST(none.accuracy() == 0.5);
  BOOST_TEST(to_json(none)["precision"].is_null());
  BOOST_TEST(to_json(none)["recall"].get<double>() == 0.0);
  Confusion no_true;
  no_true.add(false, false);
  BOOST_TEST(std::isnan(no_true.recall()));
  BOOST_TEST(std::isnan(no_true.f1()));
}

BOOST_AUTO_TEST_CASE(threshold_maximises_training_f1) {
  // true claims score 0.5 and 0.9, false ones 0.1, 0.2, 0.3: θ between 0.3 and 0.5 separates them.
  const double t =
      detail::best_threshold({{0.1, false}, {0.2, false}, {0.5, true}, {0.3, false}, {0.9, true}});
  BOOST_TEST(t == 0.4, boost::test_tools::tolerance(1e-12));
  // overlapping: a false claim at 0.6 above a true at 0.5; best F1 keeps both trues (F1 0.8).
  const double u = detail::best_threshold({{0.5, true}, {0.6, false}, {0.9, true}, {0.1, false}});
  BOOST_TEST(u == 0.3, boost::test_tools::tolerance(1e-12));
  BOOST_CHECK_THROW(detail::best_threshold({}), ArgumentError);
  BOOST_TEST(testing::throws_with<ArgumentError>(
      [] {
        (void)detail::best_threshold({{0.1, false}, {0.2, false}});
      },
      {"no true claim"}));
}

BOOST_AUTO_TEST_CASE(wrong_objects_come_from_the_relation_distinct_and_seeded) {
  std::vector<Fact> pool{fact("a", "r", " A"), fact("b", "r", " B"), fact("c", "r", " C"),
                         fact("d", "r", " B"), fact("e", "r", " A"), fact("x", "s", " X"),
                         fact("f", "r", " F")};
  const auto w = detail::wrong_objects(pool[0], pool, "en", 5, 42);
  BOOST_TEST(w.size() == 3u);  // B, C, F: not the true A, not X of another relation, B once
  std::set<std::string> got(w.begin(), w.end());
  BOOST_TEST((got == std::set<std::string>{" B", " C", " F"}));
  const auto two = detail::wrong_objects(pool[0], pool, "en", 2, 42);
  BOOST_TEST(two.size() == 2u);
  BOOST_TEST((two == detail::wrong_objects(pool[0], pool, "en", 2, 42)));  // deterministic
  BOOST_TEST(detail::wrong_objects(pool[5], pool, "en", 5, 42).empty());   // alone in relation s
}

BOOST_AUTO_TEST_CASE(split_is_a_seeded_permutation_with_both_parts) {
  for (std::size_t n : {2u, 3u, 5u, 10u, 11u}) {
    std::vector<std::size_t> idx(n);
    for (std::size_t i = 0; i < n; ++i) idx[i] = i;
    auto again = idx;
    const auto k = detail::split_train(idx, 0.8, 42);
    BOOST_TEST(detail::split_train(again, 0.8, 42) == k);
    BOOST_TEST((again == idx));
    BOOST_TEST(k >= 1u);
    BOOST_TEST(k <= n - 1);
    if (n == 10) BOOST_TEST(k == 8u);
    auto sorted = idx;
    std::sort(sorted.begin(), sorted.end());
    for (std::size_t i = 0; i < n; ++i) BOOST_TEST(sorted[i] == i);
  }
}

BOOST_AUTO_TEST_CASE(runs_on_stories260k_deterministically_and_reports_what_it_skips) {
  const auto model = LlamaModel<float>::load(testing::stories_dir() / "stories260K.bin");
  const Llama2cTokenizer tok{testing::stories_dir() / "tok512.bin", model.vocab_size()};
  const KnowledgeProbe probe(model, tok);
  auto facts = read_facts(testing::data_dir() / "facts" / "stories_factcheck.jsonl").facts;
  BOOST_REQUIRE(facts.size() == 12u);
  facts.push_back(fact("lonely", "alone", " nobody"));  // relation with a single fact
  FactCheckOptions o;
  o.languages = {"en"};
  o.attribution.steps = 8;
  o.thresholds = {{"en", 0.1}};     // DKN candidates: the knowledge neurons at t = 0.1
  o.fit = FactCheckFit::in_sample;  // the reference code's fit: set and θ on all training facts
  const auto rep = fact_check(probe, facts, facts, o);
  BOOST_TEST(rep.relations.size() == 2u);
  std::size_t claims_true = 0;
  for (const auto& c : rep.claims) {
    claims_true += c.truth;
    BOOST_TEST(std::isfinite(c.score));
  }
  BOOST_TEST(rep.claims.size() == 12u * 6u);  // 6 objects per relation: 1 true + 5 wrong
  BOOST_TEST(claims_true == 12u);
  for (const auto& r : rep.relations) {
    BOOST_TEST(r.train_facts == 5u);  // round(0.8 · 6)
    BOOST_TEST(r.test_facts == 1u);
    BOOST_TEST(r.forward_passes > 0u);
    BOOST_TEST(!r.neurons.empty(), r.relation << " has no relation DKN set");
  }
  bool lonely = false;
  for (const auto& s : rep.skipped)
    lonely |= s.fact == "relation:alone" && s.reason.find("at least 2 facts") != std::string::npos;
  BOOST_TEST(lonely);
  const auto [dkn, base] = confusion(rep, "en", true);
  BOOST_TEST(dkn.total() == 60u);
  BOOST_TEST(base.total() == 60u);
  // the tuned baseline and the 1:1 variant are there, on the same claims
  BOOST_TEST(confusion(rep, "en", Checker::probability, ClaimSplit::test).total() == 12u);
  BOOST_TEST(confusion(rep, "en", Checker::dkn, ClaimSplit::test_1to1).total() == 4u);
  // Same seed, same everything.
  const auto again = fact_check(probe, facts, facts, o);
  BOOST_REQUIRE(again.claims.size() == rep.claims.size());
  for (std::size_t i = 0; i < rep.claims.size(); ++i) {
    BOOST_TEST(again.claims[i].object == rep.claims[i].object);
    BOOST_TEST(again.claims[i].score == rep.claims[i].score);
  }
  // Every claim scored as if alone: the candidates of a fact that share the prompt are scored
  // in one attribute_shared call, bit-identical to one attribute call each; top-1 and
  // P(candidate) from shared passes equal the single-claim ones.
  std::size_t multi_token = 0, top1 = 0;
  std::map<std::pair<std::string, std::size_t>, std::size_t> group;  // (fact, answer tokens)
  for (const auto& c : rep.claims) {
    const auto f = std::ranges::find_if(facts, [&](const Fact& x) { return x.id == c.fact; });
    BOOST_REQUIRE(f != facts.end());
    const auto r = std::ranges::find_if(rep.relations, [&](const RelationCheck& x) {
      return x.relation == c.relation && x.language == c.language;
    });
    BOOST_REQUIRE(r != rep.relations.end());
    AttributionOptions at = o.attribution;  // only the set's layers, except for a true claim
    if (!(c.truth && c.train))              // of a set-fold fact: its DKN search's attribution
      for (const auto& [l, _] : r->neurons.layer_histogram()) at.layers.push_back(l);
    const auto enc = probe.encode(f->prompts.at("en"), c.object);
    multi_token += enc.targets.size() > 1;
    ++group[{c.fact, enc.targets.size()}];
    top1 += c.model_top1;
    BOOST_TEST(detail::mean_over(probe.attribute(enc, at), r->neurons) == c.score,
               c.fact << " " << c.object);
    BOOST_TEST(detail::answers_top1(model, enc).value_or(false) == c.model_top1);
    const double p = detail::answer_probability(model, enc);
    BOOST_TEST(std::abs(p - c.p_model) <= 1e-6 * p, c.fact << " " << c.object);
  }
  BOOST_TEST(multi_token > 0u);  // groups of one and of several candidates were both scored
  BOOST_TEST(std::ranges::any_of(group, [](const auto& g) { return g.second > 1; }));
  BOOST_TEST(std::ranges::any_of(group, [](const auto& g) { return g.second == 1; }));
  // the shared logits pass gives top-1 verdicts of both kinds
  BOOST_TEST(top1 > 0u);
  BOOST_TEST(top1 < rep.claims.size());
  // A fact whose relation has no other object: an empty candidate list, reported.
  std::vector<Fact> two{fact("u", "same", " one"), fact("v", "same", " one")};
  const auto none = fact_check(probe, two, two, o);
  BOOST_TEST(none.claims.empty());
  BOOST_TEST(none.skipped.size() == 3u);  // u, v, then the relation without a split
  BOOST_TEST(none.skipped[0].reason.find("empty candidate list") != std::string::npos);
}

// docs/METHOD.md §10: the relation set and θ come from disjoint training folds, θ_p of the
// P(candidate) baseline from the same claims as θ, and only held-out claims are evidence.
BOOST_AUTO_TEST_CASE(cross_fitting_keeps_the_set_threshold_and_test_claims_apart) {
  const auto model = LlamaModel<float>::load(testing::stories_dir() / "stories260K.bin");
  const Llama2cTokenizer tok{testing::stories_dir() / "tok512.bin", model.vocab_size()};
  const KnowledgeProbe probe(model, tok);
  const auto facts = read_facts(testing::data_dir() / "facts" / "stories_factcheck.jsonl").facts;
  FactCheckOptions o;
  o.languages = {"en"};
  o.attribution.steps = 8;
  o.thresholds = {{"en", 0.1}};
  const auto rep = fact_check(probe, facts, facts, o);  // cross-fit is the default
  BOOST_TEST((rep.fit == FactCheckFit::cross_fit));
  std::map<std::string, std::set<ClaimFold>> folds_of;  // every fact sits in exactly one fold
  std::map<ClaimFold, std::size_t> facts_in;
  for (const auto& c : rep.claims) folds_of[c.fact].insert(c.fold);
  for (const auto& [f, folds] : folds_of) {
    BOOST_TEST(folds.size() == 1u, f);
    ++facts_in[*folds.begin()];
  }
  // per relation of 6: 5 train = 3 set + 2 threshold, 1 test (relations without a set have no
  // claims, so count only what is there)
  for (const auto& r : rep.relations) {
    BOOST_TEST(r.train_facts == 5u);
    BOOST_TEST(r.test_facts == 1u);
  }
  BOOST_TEST_REQUIRE(!rep.claims.empty());  // at least one relation has a DKN set
  {
    BOOST_TEST(facts_in[ClaimFold::set] == 3u * facts_in[ClaimFold::test]);
    BOOST_TEST(facts_in[ClaimFold::threshold] == 2u * facts_in[ClaimFold::test]);
    // θ is the best threshold of the threshold-fold claims, whatever the set-fold claims say
    for (const auto& r : rep.relations) {
      if (r.neurons.empty()) continue;
      std::vector<std::pair<double, bool>> fit;
      for (const auto& c : rep.claims)
        if (c.relation == r.relation && c.fold == ClaimFold::threshold)
          fit.push_back({c.score, c.truth});
      BOOST_TEST(r.threshold == detail::best_threshold(fit));
    }
    const auto j = to_json(rep);
    BOOST_TEST(j["fit"] == "cross_fit");
    BOOST_TEST(j["summary"]["en"]["test"].contains("baseline_p"));
    BOOST_TEST(j["summary"]["en"].contains("test_1to1"));
  }
  // One training fact per relation cannot be cut in two folds: the relation is skipped, named.
  std::vector<Fact> small{facts[0], facts[1], facts[6], facts[7]};
  o.train_fraction = 0.5;
  const auto tiny = fact_check(probe, small, facts, o);
  BOOST_TEST(tiny.claims.empty());
  bool named = false;
  for (const auto& s : tiny.skipped)
    named |= s.reason.find("cross-fitting needs") != std::string::npos;
  BOOST_TEST(named);
}

// `factcheck --dkn-from`: DKN searches done in advance (a run's results file) replace the
// set fold's searches; given the searches fact_check itself would make, the relation sets, the
// thresholds and every claim's score are the same.
BOOST_AUTO_TEST_CASE(given_dkn_searches_replace_the_set_folds_searches) {
  const auto model = LlamaModel<float>::load(testing::stories_dir() / "stories260K.bin");
  const Llama2cTokenizer tok{testing::stories_dir() / "tok512.bin", model.vocab_size()};
  const KnowledgeProbe probe(model, tok);
  const auto facts = read_facts(testing::data_dir() / "facts" / "stories_factcheck.jsonl").facts;
  FactCheckOptions o;
  o.languages = {"en"};
  o.attribution.steps = 8;
  o.thresholds = {{"en", 0.1}};
  const auto searched = fact_check(probe, facts, facts, o);
  BOOST_TEST_REQUIRE(!searched.claims.empty());
  auto g = o;
  for (const auto& f : facts) {  // the search fact_check makes for a set-fold fact
    const auto e = probe.encode(f.prompts.at("en"), f.answers.at("en"));
    const auto a = probe.attribute(e, o.attribution);
    const auto sel = KnowledgeProbe<LlamaModel<float>>::select(a, 0.1);
    const auto d = find_degenerate(model, e, a, o.dkn, &sel.ranked);
    RunDkn r;
    r.forward_passes = d.forward_passes;
    r.degenerate = d.degenerate;
    g.given_dkn[f.id]["en"] = r;
  }
  const auto given = fact_check(probe, facts, facts, g);
  BOOST_REQUIRE(given.relations.size() == searched.relations.size());
  for (std::size_t i = 0; i < given.relations.size(); ++i) {
    const auto &x = searched.relations[i], &y = given.relations[i];
    BOOST_TEST((x.neurons == y.neurons));
    BOOST_TEST(x.forward_passes == y.forward_passes);
    BOOST_TEST(x.train_with_dkn == y.train_with_dkn);
    BOOST_TEST(x.threshold == y.threshold);  // fitted on threshold-fold claims: scored alike
  }
  BOOST_REQUIRE(given.claims.size() == searched.claims.size());
  for (std::size_t i = 0; i < given.claims.size(); ++i) {
    const auto &x = searched.claims[i], &y = given.claims[i];
    BOOST_TEST(x.object == y.object);
    // a set-fold true claim is now attributed at R's layers only, not at all layers
    BOOST_TEST(std::abs(x.score - y.score) <= 1e-5 * std::max(1e-12, std::abs(x.score)),
               x.fact << " " << x.object << ": " << x.score << " vs " << y.score);
  }
  // Some facts given, the others searched: the same again; and the reference code's in-sample
  // fit, where the set facts' true claims also fit θ.
  auto half = g;
  for (std::size_t i = 0; i < facts.size(); i += 2) half.given_dkn.erase(facts[i].id);
  const auto mixed = fact_check(probe, facts, facts, half);
  BOOST_REQUIRE(mixed.relations.size() == searched.relations.size());
  for (std::size_t i = 0; i < mixed.relations.size(); ++i)
    BOOST_TEST((mixed.relations[i].neurons == searched.relations[i].neurons));
  auto in_o = o, in_g = g;
  in_o.fit = in_g.fit = FactCheckFit::in_sample;
  const auto in_searched = fact_check(probe, facts, facts, in_o);
  const auto in_given = fact_check(probe, facts, facts, in_g);
  BOOST_REQUIRE(in_given.relations.size() == in_searched.relations.size());
  for (std::size_t i = 0; i < in_given.relations.size(); ++i) {
    BOOST_TEST((in_given.relations[i].neurons == in_searched.relations[i].neurons));
    BOOST_TEST(in_given.relations[i].threshold == in_searched.relations[i].threshold,
               boost::test_tools::tolerance(1e-5));
  }
  // Planted searches: every relation set is the planted pair, and nothing is searched.
  auto h = o;
  const std::vector<Neuron> pair{{0, 1}, {model.num_layers() - 1, 2}};
  for (const auto& f : facts) h.given_dkn[f.id]["en"] = RunDkn{{pair}, 0, true};
  const auto planted = fact_check(probe, facts, facts, h);
  BOOST_TEST_REQUIRE(!planted.relations.empty());
  for (const auto& r : planted.relations) {
    BOOST_TEST((r.neurons == NeuronSet(pair)));
    BOOST_TEST(r.forward_passes == 0u);
  }
}

BOOST_AUTO_TEST_CASE(an_interrupted_run_resumes_to_the_same_report) {
  // `knprobe factcheck` checkpoints each (language, relation) (FactCheckOptions::on_relation) and
  // resumes from them (FactCheckOptions::resumed): every relation is reported once, with what it
  // added to the report, and a run resumed from the first outcomes — read back from their JSON —
  // gives the same report to the byte as the uninterrupted one.
  const auto model = LlamaModel<float>::load(testing::stories_dir() / "stories260K.bin");
  const Llama2cTokenizer tok{testing::stories_dir() / "tok512.bin", model.vocab_size()};
  const KnowledgeProbe probe(model, tok);
  auto facts = read_facts(testing::data_dir() / "facts" / "stories_factcheck.jsonl").facts;
  facts.push_back(fact("lonely", "alone", " nobody"));  // a relation skipped, with the reason
  facts.push_back(fact("u", "same", " one"));           // facts without a wrong object
  facts.push_back(fact("v", "same", " one"));
  for (auto& f : facts) {  // a second language (the same text), so that languages interleave
    f.prompts["xx"] = f.prompts.at("en");
    f.answers["xx"] = f.answers.at("en");
  }
  FactCheckOptions o;
  o.languages = {"en", "xx"};
  o.attribution.steps = 4;
  o.thresholds = {{"en", 0.1}, {"xx", 0.2}};
  std::vector<nlohmann::json> outcomes;
  std::set<std::string> once;
  o.on_relation = [&](const RelationOutcome& r) {
    BOOST_TEST(once.insert(r.language + "/" + r.relation).second);
    outcomes.push_back(to_json(r));
  };
  const auto full = fact_check(probe, facts, facts, o);
  // per language: the two relations of the file, "alone", "same"
  BOOST_REQUIRE(outcomes.size() == 8u);
  BOOST_TEST(!full.claims.empty());
  auto r = o;
  for (std::size_t k = 1; k < outcomes.size(); k += 2) {  // every other one: they interleave
    auto back = relation_outcome_from_json(outcomes[k], model.num_layers(), model.ffn_width(),
                                           "outcome " + std::to_string(k));
    BOOST_TEST(to_json(back).dump() == outcomes[k].dump());  // read back exactly
    r.resumed[{back.language, back.relation}] = std::move(back);
  }
  std::vector<nlohmann::json> first = std::move(outcomes);
  outcomes.clear();
  once.clear();
  const auto resumed = fact_check(probe, facts, facts, r);
  BOOST_TEST(outcomes.size() == 4u);  // only the relations not resumed
  BOOST_TEST(to_json(resumed).dump() == to_json(full).dump());
  // A damaged outcome is refused by name (one with a relation set and claims).
  const auto good = std::ranges::find_if(
      first, [](const nlohmann::json& x) { return !x["check"].is_null() && !x["claims"].empty(); });
  BOOST_REQUIRE(good != first.end());
  auto bad = *good;
  bad["claims"][0]["p_model"] = -0.5;
  BOOST_CHECK_THROW(relation_outcome_from_json(bad, model.num_layers(), model.ffn_width(), "x"),
                    FormatError);
  bad = *good;
  bad["claims"][0]["fold"] = "train";
  BOOST_CHECK_THROW(relation_outcome_from_json(bad, model.num_layers(), model.ffn_width(), "x"),
                    FormatError);
  bad = *good;
  bad["claims"][0]["language"] = "zz";  // a claim of another language in this record
  BOOST_CHECK_THROW(relation_outcome_from_json(bad, model.num_layers(), model.ffn_width(), "x"),
                    FormatError);
  bad = *good;
  bad["check"]["relation"] = "other";
  BOOST_CHECK_THROW(relation_outcome_from_json(bad, model.num_layers(), model.ffn_width(), "x"),
                    FormatError);
}

BOOST_AUTO_TEST_CASE(absurd_options_are_clear_errors) {
  const auto model = LlamaModel<float>::load(testing::stories_dir() / "stories260K.bin");
  const Llama2cTokenizer tok{testing::stories_dir() / "tok512.bin", model.vocab_size()};
  const KnowledgeProbe probe(model, tok);
  const std::vector<Fact> facts{fact("a", "r", " A"), fact("b", "r", " B")};
  FactCheckOptions o;
  o.languages = {"en"};
  BOOST_CHECK_THROW(fact_check(probe, {}, facts, o), ArgumentError);
  o.wrong_per_fact = 0;
  BOOST_CHECK_THROW(fact_check(probe, facts, facts, o), ArgumentError);
  o.wrong_per_fact = 5;
  o.train_fraction = 1.0;
  BOOST_CHECK_THROW(fact_check(probe, facts, facts, o), ArgumentError);
  o.train_fraction = 0.8;
  o.relation_fraction = -0.1;
  BOOST_CHECK_THROW(fact_check(probe, facts, facts, o), ArgumentError);
}

BOOST_AUTO_TEST_SUITE_END()
