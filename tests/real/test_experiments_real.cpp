// The experiments on the real stories260K model: screening for facts the model answers, the
// localization experiment (effects, top-1, Succ in the summary) and the DKN experiment (bounded
// forward passes, summary counts).
#include <boost/test/unit_test.hpp>

#include "knprobe/experiments/degenerate.hpp"
#include "knprobe/experiments/editing.hpp"
#include "knprobe/experiments/localize.hpp"
#include "knprobe/experiments/run_records.hpp"
#include "knprobe/model/llama.hpp"
#include "knprobe/tokenize/llama2c_tokenizer.hpp"
#include "support/paths.hpp"

using namespace knprobe;

namespace {

struct StoriesModel {
  LlamaModel<float> model = LlamaModel<float>::load(testing::stories_dir() / "stories260K.bin");
  Llama2cTokenizer tok{testing::stories_dir() / "tok512.bin", model.vocab_size()};
};

std::vector<Fact> facts() {
  return {{"lily",
           "name",
           {{"en", "Once upon a time, there was a little girl named"}},
           {{"en", " Lily"}}},
          {"park", "place", {{"en", "One day, Lily went to the"}}, {{"en", " park"}}},
          {"nonsense", "odd", {{"en", "Once upon a"}}, {{"en", " elephant"}}}};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(real_experiments)

BOOST_AUTO_TEST_CASE(screening_keeps_what_the_model_answers) {
  const StoriesModel s;
  const KnowledgeProbe probe(s.model, s.tok);
  AnswerableOptions o;
  o.languages = {"en"};
  std::vector<SkippedFact> skipped;
  const auto kept = answerable_facts(probe, facts(), o, skipped);
  BOOST_REQUIRE(!kept.empty());
  BOOST_TEST(kept[0].id == "lily");
  bool nonsense_skipped = false;
  for (const auto& k : skipped)
    if (k.fact == "nonsense") nonsense_skipped = k.reason.find("top-1") != std::string::npos;
  BOOST_TEST(nonsense_skipped);
  o.limit = 1;
  std::vector<SkippedFact> none;
  BOOST_TEST(answerable_facts(probe, facts(), o, none).size() == 1u);
  BOOST_TEST(none.empty());  // stopped at the limit before screening the rest
}

BOOST_AUTO_TEST_CASE(localization_reports_effects_and_succ) {
  const StoriesModel s;
  const KnowledgeProbe probe(s.model, s.tok);
  LocalizeOptions o;
  o.languages = {"en"};
  o.thresholds = {{"en", 0.3}};
  o.attribution.steps = 8;
  o.unrelated = 2;  // the two facts of other relations
  const auto rep = localize(probe, facts(), o);
  BOOST_REQUIRE(rep.facts.size() == 3u);
  const auto& lily = rep.facts[0].languages.at("en");
  BOOST_TEST(lily.top1.value());
  BOOST_TEST(lily.p_answer > 0.5);
  BOOST_TEST(!lily.selection.neurons.empty());
  BOOST_TEST(lily.suppress.related.value() < 0.0);
  BOOST_TEST(lily.suppress.unrelated.has_value());
  BOOST_TEST(lily.suppress.unrelated_facts.size() == 2u);
  BOOST_TEST(lily.suppress.unrelated_abs.value() >= std::abs(lily.suppress.unrelated.value()));
  BOOST_TEST(lily.suppress.control.has_value());
  BOOST_TEST(lily.suppress.control_magnitude.has_value());
  BOOST_TEST(!rep.facts[2].languages.at("en").top1.value());
  const auto j = to_json(rep);
  const auto& en = j["summary"]["languages"]["en"];
  BOOST_TEST(en.contains("succ"));
  BOOST_TEST(en["suppress_related"]["n"] == 3);
  BOOST_TEST(en["suppress_related"]["mean_ci"].is_array());  // 95 % interval over the 3 facts
  BOOST_TEST(en.contains("recurrence"));
  // K larger than the facts of other relations: the control is missing with its reason, the
  // related effect is still measured, nothing is averaged over zero facts.
  o.unrelated = 5;
  const auto few = localize(probe, facts(), o);
  const auto& e = few.facts[0].languages.at("en").suppress;
  BOOST_TEST(!e.unrelated.has_value());
  BOOST_TEST(e.related.has_value());
  BOOST_REQUIRE(!e.notes.empty());
  BOOST_TEST(e.notes[0].find("only 2 fact(s) of other relations") != std::string::npos, e.notes[0]);
}

BOOST_AUTO_TEST_CASE(dkn_experiment_counts_and_bounds) {
  const StoriesModel s;
  const KnowledgeProbe probe(s.model, s.tok);
  DknExperimentOptions o;
  o.languages = {"en", "zh"};  // no zh prompts: recorded as skipped
  o.attribution.steps = 8;
  const auto all = facts();
  const std::vector<Fact> two(all.begin(), all.begin() + 2);
  const auto rep = degenerate_neurons(probe, two, o);
  BOOST_TEST(rep.results.size() == 2u);
  BOOST_TEST(rep.skipped.size() == 2u);
  for (const auto& r : rep.results) {
    // candidates: the fact's selected knowledge neurons (t = 0.3), at most 20
    BOOST_TEST(r.dkn.candidates.size() <= 20u);
    for (std::size_t k = 1; k < r.dkn.candidates.size(); ++k)
      BOOST_TEST(r.dkn.candidates[k].second >= 0.3 * r.dkn.candidates.front().second);
    BOOST_TEST(r.dkn.forward_passes <= 210u);
    for (const auto& set : r.dkn.degenerate) BOOST_TEST(set.size() == 2u);
  }
  const auto j = to_json(rep);
  BOOST_TEST(j["summary"]["en"]["facts"] == 2);
  BOOST_TEST(j["skipped"].size() == 2u);
}

BOOST_AUTO_TEST_CASE(editing_measures_and_restores_the_weights_bit_exactly) {
  StoriesModel s;
  // Two phrasings stand in for two languages ("a", "b"); two facts of one relation give each
  // other their new answer, a third of another relation is the unrelated one.
  const std::vector<Fact> fs{
      {"lily",
       "name",
       {{"a", "Once upon a time, there was a little girl named"}, {"b", "There was a girl named"}},
       {{"a", " Lily"}, {"b", " Lily"}}},
      {"tim",
       "name",
       {{"a", "Once upon a time, there was a little boy named"}, {"b", "There was a boy named"}},
       {{"a", " Tim"}, {"b", " Tim"}}},
      {"park",
       "place",
       {{"a", "One day, Lily went to the"}, {"b", "Lily went to the"}},
       {{"a", " park"}, {"b", " park"}}}};
  std::vector<MatrixF> before;
  for (const auto& l : s.model.weights().layers) before.push_back(l.w_down);
  EditingOptions o;
  o.languages = {"a", "b"};
  o.thresholds = {{"a", 0.3}, {"b", 0.3}};
  o.attribution.steps = 8;
  o.unrelated = 1;  // "park" is the only fact of another relation
  const auto rep = cross_lingual_editing(s.model, s.tok, fs, o);
  BOOST_TEST(rep.facts.size() == 2u);  // "park" has no sibling of its relation
  BOOST_TEST(rep.skipped.size() == 1u);
  for (std::size_t l = 0; l < before.size(); ++l)
    BOOST_TEST((s.model.weights().layers[l].w_down.array() == before[l].array()).all());
  std::size_t edits = 0;
  double reliability = 0;
  int n = 0;
  for (const auto& f : rep.facts) {
    BOOST_TEST(f.sets.count("likn") == 1u);
    for (const auto& e : f.measures) {
      if (e.mode == "edit") {
        ++edits;
        BOOST_TEST(e.p_new_after.has_value());
      }
      if (e.mode == "suppress" && e.set == e.source && e.language == e.source) {
        reliability += e.old_change();
        ++n;
      }
    }
  }
  BOOST_TEST(edits > 0u);
  BOOST_REQUIRE(n > 0);
  BOOST_TEST(reliability / n < 0.0);  // suppressing a fact's own neurons lowers its answer
  const auto j = to_json(rep);
  BOOST_TEST(j["summary"].contains("N_source/suppress/reliability"));
  BOOST_TEST(j["summary"].contains("all/edit/generality"));
}

BOOST_AUTO_TEST_SUITE_END()
