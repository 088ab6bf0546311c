// Fact-checking with relation DKN sets: the metrics against hand counts, the threshold fit, the
// wrong-object draw and the split, then the whole experiment on the real stories260K model
// (determinism, claim bookkeeping, skipped relations and facts, bad options).
#include "knprobe/experiments/fact_check.hpp"

#include <boost/test/unit_test.hpp>

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
  BOOST_TEST(Confusion{}.f1() == 0.0);  // no claims: zeros, not NaN
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
  // Same seed, same everything.
  const auto again = fact_check(probe, facts, facts, o);
  BOOST_REQUIRE(again.claims.size() == rep.claims.size());
  for (std::size_t i = 0; i < rep.claims.size(); ++i) {
    BOOST_TEST(again.claims[i].object == rep.claims[i].object);
    BOOST_TEST(again.claims[i].score == rep.claims[i].score);
  }
  // A fact whose relation has no other object: an empty candidate list, reported.
  std::vector<Fact> two{fact("u", "same", " one"), fact("v", "same", " one")};
  const auto none = fact_check(probe, two, two, o);
  BOOST_TEST(none.claims.empty());
  BOOST_TEST(none.skipped.size() == 3u);  // u, v, then the relation without a split
  BOOST_TEST(none.skipped[0].reason.find("empty candidate list") != std::string::npos);
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
