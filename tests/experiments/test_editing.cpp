// experiments/editing.hpp and the signed value-vector edit (docs/METHOD.md §6) on the real
// stories260K model: a neuron with a negative activation writes a·v, so Dai's rule as written (v −
// λ e_old) pushes the old answer *up* through it; the edit along sign(a) must lower P(old). Then
// the editing experiment: K unrelated facts for locality, the activation signs logged, weights
// restored bit-exactly.
#include "knprobe/experiments/editing.hpp"

#include <boost/test/unit_test.hpp>
#include <cmath>
#include <set>

#include "knprobe/data/facts.hpp"
#include "knprobe/model/llama.hpp"
#include "knprobe/tokenize/llama2c_tokenizer.hpp"
#include "support/paths.hpp"

using namespace knprobe;

BOOST_AUTO_TEST_SUITE(experiments_editing)

namespace {

/// Options for stories_two_phrasings.jsonl: its two phrasings as languages "a" and "b" (so that
/// LIKN, the union and each N_l differ), m = 4, one unrelated fact.
EditingOptions two_phrasings_options() {
  EditingOptions o;
  o.languages = {"a", "b"};
  o.thresholds = {{"a", 0.3}, {"b", 0.3}};
  o.attribution.steps = 4;
  o.unrelated = 1;
  return o;
}

}  // namespace

BOOST_AUTO_TEST_CASE(erasing_through_negative_neurons_follows_the_sign_of_the_activation) {
  auto model = LlamaModel<float>::load(testing::stories_dir() / "stories260K.bin");
  const Llama2cTokenizer tok{testing::stories_dir() / "tok512.bin", model.vocab_size()};
  const KnowledgeProbe probe(model, tok);
  const auto f = probe.encode("Once upon a time, there was a little girl named", " Lily");
  // The planted set: the 8 units of the last layer with the most negative activation at the
  // answer position.
  const int last = model.num_layers() - 1, p0 = f.positions.front();
  const auto trace = model.trace(f.tokens);  // activations() views the trace: keep it alive
  const auto acts = trace.activations(last);
  std::vector<std::pair<double, int>> by;
  for (int j = 0; j < model.ffn_width(); ++j) by.push_back({static_cast<double>(acts(p0, j)), j});
  std::sort(by.begin(), by.end());
  std::vector<Neuron> ns;
  std::map<Neuron, double> act;
  for (int k = 0; k < 8; ++k) {
    BOOST_TEST_REQUIRE(by[k].first < 0.0);
    ns.push_back({last, by[k].second});
    act[{last, by[k].second}] = by[k].first;
  }
  const NeuronSet set(ns);
  const double before = detail::answer_probability(model, f);
  const auto saved = model.weights().layers[last].w_down;
  double signed_after = 0, as_written_after = 0;
  {
    ValueVectorEdit<LlamaModel<float>> e(model, set);
    e.edit(f.targets.front(), std::nullopt, 1.0, 0.0, act);
    signed_after = detail::answer_probability(model, f);
  }
  {
    ValueVectorEdit<LlamaModel<float>> e(model, set);
    e.edit(f.targets.front(), std::nullopt, 1.0, 0.0);
    as_written_after = detail::answer_probability(model, f);
  }
  BOOST_TEST(signed_after < before,
             "erase along sign(a): P(old) " << before << " -> " << signed_after);
  BOOST_TEST(as_written_after > signed_after,
             "Dai's rule as written: P(old) " << before << " -> " << as_written_after);
  BOOST_TEST((model.weights().layers[last].w_down.array() == saved.array()).all());  // undone
  // every neuron needs its activation; a zero one is left as it is
  std::map<Neuron, double> missing = act;
  missing.erase(missing.begin());
  ValueVectorEdit<LlamaModel<float>> e(model, set);
  BOOST_CHECK_THROW(e.edit(f.targets.front(), std::nullopt, 1.0, 0.0, missing), ArgumentError);
}

BOOST_AUTO_TEST_CASE(experiment_uses_k_unrelated_facts_and_logs_activation_signs) {
  auto model = LlamaModel<float>::load(testing::stories_dir() / "stories260K.bin");
  const Llama2cTokenizer tok{testing::stories_dir() / "tok512.bin", model.vocab_size()};
  auto facts = read_facts(testing::data_dir() / "facts" / "stories_factcheck.jsonl").facts;
  facts.resize(8);  // 6 names, 2 places
  std::vector<MatrixF> before;
  for (const auto& l : model.weights().layers) before.push_back(l.w_down);
  EditingOptions o;
  o.languages = {"en"};
  o.thresholds = {{"en", 0.3}};
  o.attribution.steps = 8;
  o.unrelated = 2;
  const auto rep =
      cross_lingual_editing(model, tok, std::vector<Fact>(facts.begin(), facts.begin() + 2), o);
  BOOST_TEST(rep.facts.empty());  // two names, no fact of another relation: skipped with reason
  BOOST_REQUIRE(rep.skipped.size() == 2u);
  BOOST_TEST(rep.skipped[0].reason.find("other relations") != std::string::npos);
  const auto all = cross_lingual_editing(model, tok, facts, o);
  BOOST_TEST(!all.facts.empty());
  bool logged = false;
  std::size_t controls = 0;
  for (const auto& f : all.facts)
    for (const auto& m : f.measures) {
      const bool control = m.set.find('~') != std::string::npos;
      controls += control;
      // Control sets (METHOD.md §10): P(old) measured, locality not.
      if (control) BOOST_TEST(!m.unrelated_change.has_value());
      if (m.mode == "suppress" || control) continue;
      BOOST_TEST(m.unrelated_abs.has_value());
      BOOST_TEST(*m.unrelated_abs >= std::abs(*m.unrelated_change) - 1e-12);
      logged |= m.negative_share.has_value();
    }
  BOOST_TEST(logged);
  for (std::size_t l = 0; l < before.size(); ++l)
    BOOST_TEST((model.weights().layers[l].w_down.array() == before[l].array()).all());
  // Every set has a random control of its layer histogram, disjoint from it, and a control
  // matched on |activation|, or a note saying why not.
  BOOST_TEST(controls > 0u);
  for (const auto& f : all.facts)
    for (const auto& [name, set] : f.sets) {
      if (set.empty()) continue;
      for (const std::string c : {"~control", "~control_magnitude"}) {
        const auto a = f.activations.find(name + c);
        bool noted = false;
        for (const auto& n : f.notes) noted |= n.rfind(name + c + ":", 0) == 0;
        BOOST_TEST((a != f.activations.end()) != noted);
        if (a == f.activations.end()) continue;
        BOOST_TEST(a->second.size() == set.size());
        NeuronSet ctl;
        for (const auto& [n, act] : a->second) ctl.insert(n);
        BOOST_TEST((ctl.layer_histogram() == set.layer_histogram()));
        for (const auto& n : ctl) BOOST_TEST(!set.contains(n));
      }
    }
  const auto j = to_json(all);
  BOOST_TEST(
      j.at("summary").at("N_source/erase/reliability").at("old_change").at("mean_ci").is_array());
  BOOST_TEST(j.at("summary").at("N_source~control/erase/reliability").at("old_change").is_object());
  BOOST_TEST(!j.at("summary").at("N_source~control/erase/reliability").contains("unrelated_abs"));
  // The controls change nothing of the real sets' measures, and are the same on a rerun.
  auto no_controls = o;
  no_controls.controls = false;
  const auto plain = cross_lingual_editing(model, tok, facts, no_controls);
  const auto again = cross_lingual_editing(model, tok, facts, o);
  BOOST_REQUIRE(plain.facts.size() == all.facts.size());
  BOOST_REQUIRE(again.facts.size() == all.facts.size());
  for (std::size_t i = 0; i < all.facts.size(); ++i) {
    std::vector<const EditMeasure*> real;
    for (const auto& m : all.facts[i].measures)
      if (m.set.find('~') == std::string::npos) real.push_back(&m);
    BOOST_REQUIRE(real.size() == plain.facts[i].measures.size());
    for (std::size_t k = 0; k < real.size(); ++k) {
      BOOST_TEST(real[k]->set == plain.facts[i].measures[k].set);
      BOOST_TEST(real[k]->p_old_after == plain.facts[i].measures[k].p_old_after);
    }
    BOOST_REQUIRE(again.facts[i].measures.size() == all.facts[i].measures.size());
    for (std::size_t k = 0; k < all.facts[i].measures.size(); ++k)
      BOOST_TEST(again.facts[i].measures[k].p_old_after == all.facts[i].measures[k].p_old_after);
    BOOST_TEST((again.facts[i].activations == all.facts[i].activations));
  }
  // Dai's refinement before editing: each fact's set loses exactly the neurons that the sets of
  // more than this share of the other relation's facts hold (in the unrefined run).
  o.generic_fraction = 0.01;
  const auto refined = cross_lingual_editing(model, tok, facts, o);
  BOOST_REQUIRE(refined.facts.size() == all.facts.size());
  std::size_t dropped = 0;
  for (std::size_t k = 0; k < all.facts.size(); ++k) {
    const auto& full = all.facts[k].sets.at("en");
    const auto& r = refined.facts[k];
    const auto& gone = r.dropped_generic.at("en");
    BOOST_TEST(r.sets.at("en").size() + gone.size() == full.size());
    std::size_t others = 0;
    for (const auto& g : all.facts) others += g.relation != r.relation;
    for (const auto& n : full) {
      std::size_t in_others = 0;
      for (const auto& g : all.facts)
        in_others += g.relation != r.relation && g.sets.at("en").contains(n);
      BOOST_TEST(gone.contains(n) == (double(in_others) > 0.01 * double(others)));
      BOOST_TEST(r.sets.at("en").contains(n) != gone.contains(n));
    }
    dropped += gone.size();
  }
  BOOST_TEST(dropped > 0u);
  BOOST_TEST(to_json(refined)["facts"][0].contains("dropped_generic"));
  o.generic_fraction = 1.0;
  BOOST_CHECK_THROW(cross_lingual_editing(model, tok, facts, o), ArgumentError);
}

BOOST_AUTO_TEST_CASE(given_sets_are_used_instead_of_attributing) {
  // `--sets-from`: sets selected in advance (a run's results file) replace pass 1; given the sets
  // the attribution selects, every measure is the same to the bit.
  auto model = LlamaModel<float>::load(testing::stories_dir() / "stories260K.bin");
  const Llama2cTokenizer tok{testing::stories_dir() / "tok512.bin", model.vocab_size()};
  auto facts = read_facts(testing::data_dir() / "facts" / "stories_factcheck.jsonl").facts;
  facts.resize(8);
  EditingOptions o;
  o.languages = {"en"};
  o.thresholds = {{"en", 0.3}};
  o.attribution.steps = 8;
  o.unrelated = 2;
  o.controls = false;
  const auto attributed = cross_lingual_editing(model, tok, facts, o);
  BOOST_REQUIRE(!attributed.facts.empty());
  auto g = o;
  for (const auto& f : attributed.facts) g.given_sets[f.fact]["en"] = f.sets.at("en");
  g.attribution.steps = 1;  // were it attributing, it would select other sets
  const auto given = cross_lingual_editing(model, tok, facts, g);
  BOOST_REQUIRE(given.facts.size() == attributed.facts.size());
  for (std::size_t i = 0; i < given.facts.size(); ++i) {
    BOOST_TEST((given.facts[i].sets == attributed.facts[i].sets));
    BOOST_REQUIRE(given.facts[i].measures.size() == attributed.facts[i].measures.size());
    for (std::size_t k = 0; k < given.facts[i].measures.size(); ++k) {
      const auto &a = attributed.facts[i].measures[k], &b = given.facts[i].measures[k];
      BOOST_TEST(a.set == b.set);
      BOOST_TEST(a.mode == b.mode);
      BOOST_TEST(a.p_old_before == b.p_old_before);
      BOOST_TEST(a.p_old_after == b.p_old_after);
      BOOST_TEST((a.p_new_after == b.p_new_after));
      BOOST_TEST((a.unrelated_change == b.unrelated_change));
      BOOST_TEST((a.unrelated_abs == b.unrelated_abs));
      BOOST_TEST((a.negative_share == b.negative_share));
    }
  }
  // A planted set is measured as given; facts not given are attributed as before.
  auto h = o;
  const std::string first = attributed.facts.front().fact;
  const NeuronSet planted(std::vector<Neuron>{{0, 3}, {model.num_layers() - 1, 7}});
  h.given_sets[first]["en"] = planted;
  const auto mixed = cross_lingual_editing(model, tok, facts, h);
  BOOST_REQUIRE(mixed.facts.size() == attributed.facts.size());
  BOOST_TEST((mixed.facts.front().sets.at("en") == planted));
  for (std::size_t i = 1; i < mixed.facts.size(); ++i)
    BOOST_TEST((mixed.facts[i].sets == attributed.facts[i].sets));
}

BOOST_AUTO_TEST_CASE(every_measure_equals_one_model_call_per_prompt) {
  // The batched measurements (one call per state of the weights) against one model call per
  // (prompt, pattern), recomputed here from the report's own sets and activations: two languages
  // (so that LIKN, the union and each N_l differ and rows of two languages could be swapped),
  // controls on, every field of every measure.
  auto model = LlamaModel<float>::load(testing::stories_dir() / "stories260K.bin");
  const Llama2cTokenizer tok{testing::stories_dir() / "tok512.bin", model.vocab_size()};
  const auto facts =
      read_facts(testing::data_dir() / "facts" / "stories_two_phrasings.jsonl").facts;
  const EditingOptions o = two_phrasings_options();
  const auto rep = cross_lingual_editing(model, tok, facts, o);
  BOOST_REQUIRE(!rep.facts.empty());
  const KnowledgeProbe probe(model, tok);
  auto close = [](double x, double y) { return std::abs(x - y) <= 1e-4 * std::abs(y) + 1e-10; };
  std::set<std::string> modes, languages;
  std::size_t checked = 0;
  for (const auto& fr : rep.facts) {
    std::size_t i = 0;
    while (facts[i].id != fr.fact) ++i;
    const auto sib = detail::sibling_fact(facts, i, o.languages);
    BOOST_REQUIRE(sib.has_value());
    auto enc = [&](const Fact& f, const std::string& l, const Fact& answer_of) {
      return probe.encode(f.prompts.at(l), answer_of.answers.at(l));
    };
    for (const auto& e : fr.measures) {
      const bool control = e.set.find('~') != std::string::npos;
      NeuronSet set;
      if (fr.sets.count(e.set))
        set = fr.sets.at(e.set);
      else
        for (const auto& [n, a] : fr.activations.at(e.set)) set.insert(n);
      const auto old_f = enc(facts[i], e.language, facts[i]);
      const auto new_f = enc(facts[i], e.language, facts[*sib]);
      std::vector<EncodedFact> unrel;
      for (auto& [id, g] :
           detail::unrelated_facts(probe, facts, i, e.language, o.unrelated, o.seed))
        unrel.push_back(std::move(g));
      std::vector<double> before_unrel;
      for (const auto& g : unrel) before_unrel.push_back(detail::answer_probability(model, g));
      const double p_new_before = detail::answer_probability(model, new_f);
      BOOST_TEST(close(e.p_old_before, detail::answer_probability(model, old_f)));
      double old_after = 0;
      std::optional<double> new_after;
      std::vector<double> unrel_after;
      if (e.mode == "suppress") {
        old_after = detail::answer_probability(model, old_f, suppress(set, old_f.positions));
        for (const auto& g : unrel)
          unrel_after.push_back(detail::answer_probability(model, g, suppress(set, g.positions)));
      } else {
        const bool is_edit = e.mode == "edit";
        const auto src_old = enc(facts[i], e.source, facts[i]);
        const auto src_new = enc(facts[i], e.source, facts[*sib]);
        ValueVectorEdit<LlamaModel<float>> guard(model, set);
        guard.edit(src_old.targets.front(),
                   is_edit ? std::optional<TokenId>(src_new.targets.front()) : std::nullopt, o.l1,
                   is_edit ? o.l2 : 0.0, fr.activations.at(e.set));
        old_after = detail::answer_probability(model, old_f);
        if (is_edit) new_after = detail::answer_probability(model, new_f);
        for (const auto& g : unrel) unrel_after.push_back(detail::answer_probability(model, g));
        std::size_t negative = 0;
        for (const auto& [n, a] : fr.activations.at(e.set)) negative += a < 0;
        BOOST_TEST(e.negative_share.value_or(-1) ==
                   static_cast<double>(negative) / static_cast<double>(set.size()));
      }
      BOOST_TEST(close(e.p_old_after, old_after), e.set << " " << e.mode << " [" << e.language
                                                        << "]: " << e.p_old_after << " vs "
                                                        << old_after);
      BOOST_TEST(e.p_new_after.has_value() == new_after.has_value());
      if (new_after) {
        BOOST_TEST(close(*e.p_new_before, p_new_before));
        BOOST_TEST(close(*e.p_new_after, *new_after));
      }
      BOOST_TEST(e.unrelated_change.has_value() == !control);
      if (!control) {
        double sum = 0, sum_abs = 0;
        for (std::size_t k = 0; k < unrel.size(); ++k) {
          const double c = (unrel_after[k] - before_unrel[k]) / before_unrel[k];
          sum += c, sum_abs += std::abs(c);
        }
        const auto K = static_cast<double>(unrel.size());
        BOOST_TEST(std::abs(*e.unrelated_change - sum / K) <= 1e-4);
        BOOST_TEST(std::abs(*e.unrelated_abs - sum_abs / K) <= 1e-4);
      }
      modes.insert(e.mode);
      languages.insert(e.language);
      ++checked;
    }
  }
  BOOST_TEST(modes.size() == 3u);
  BOOST_TEST(languages.size() == 2u);
  BOOST_TEST(checked > 20u);
  // N_l \ LIKN: where a fact has a LIKN, each language's set without it, source l, suppressed in
  // every language (itself and its two controls), never edited.
  std::size_t minus = 0, avoided = 0;
  for (const auto& fr : rep.facts) {
    const NeuronSet& shared = fr.sets.at("likn");
    for (const auto& l : o.languages) {
      const auto it = fr.sets.find(l + "_minus_likn");
      std::vector<Neuron> rest;
      for (const auto& n : fr.sets.at(l))
        if (!shared.contains(n)) rest.push_back(n);
      BOOST_TEST((it != fr.sets.end()) == (!shared.empty() && !rest.empty()));
      if (it == fr.sets.end()) continue;
      BOOST_TEST((it->second == NeuronSet(rest)));
      ++minus;
      std::size_t measured = 0;
      for (const auto& e : fr.measures)
        if (e.set.rfind(l + "_minus_likn", 0) == 0) {
          BOOST_TEST(e.mode == "suppress");
          BOOST_TEST(e.source == l);
          ++measured;
        }
      BOOST_TEST(measured == 3u * o.languages.size());  // the set and its two controls
      // its controls avoid every knowledge neuron of the fact (LIKN above all)
      for (const std::string c : {"~control", "~control_magnitude"}) {
        const auto ctl = fr.activations.find(l + "_minus_likn" + c);
        if (ctl == fr.activations.end()) continue;  // could not be formed: noted
        ++avoided;
        for (const auto& [n, a] : ctl->second) BOOST_TEST(!fr.sets.at("all").contains(n));
      }
    }
  }
  BOOST_TEST(minus > 0u);
  BOOST_TEST(avoided > 0u);
  const auto j = to_json(rep);
  BOOST_TEST(j.at("summary").contains("N_source_minus_likn/suppress/generality"));
  BOOST_TEST(
      j.at("summary").contains("N_source_minus_likn~control_magnitude/suppress/reliability"));
  BOOST_TEST(!j.at("summary").contains("N_source_minus_likn/erase/reliability"));
  auto off = o;
  off.minus_likn = false;
  const auto without = cross_lingual_editing(model, tok, facts, off);
  BOOST_REQUIRE(without.facts.size() == rep.facts.size());
  for (std::size_t i = 0; i < without.facts.size(); ++i) {
    for (const auto& [name, set] : without.facts[i].sets)
      BOOST_TEST(!name.ends_with("_minus_likn"));
    // every other measure is the same to the bit (the new sets run in batches of their own)
    std::vector<const EditMeasure*> rest;
    for (const auto& e : rep.facts[i].measures)
      if (e.set.find("_minus_likn") == std::string::npos) rest.push_back(&e);
    BOOST_REQUIRE(rest.size() == without.facts[i].measures.size());
    for (std::size_t k = 0; k < rest.size(); ++k) {
      const auto& a = *rest[k];
      const auto& b = without.facts[i].measures[k];
      BOOST_TEST(a.set + a.mode + a.language == b.set + b.mode + b.language);
      BOOST_TEST(a.p_old_after == b.p_old_after);
      BOOST_TEST((a.unrelated_change == b.unrelated_change));
    }
  }
}

BOOST_AUTO_TEST_CASE(doses_add_weaker_edits_and_leave_the_full_strength_as_it_was) {
  // EditingOptions::doses: every set and control is also erased / edited at d·(λ₁, λ₂); the
  // full-strength measures are those of a run without doses, to the bit, and a dose's measure is
  // one model call under the edit at that strength.
  auto model = LlamaModel<float>::load(testing::stories_dir() / "stories260K.bin");
  const Llama2cTokenizer tok{testing::stories_dir() / "tok512.bin", model.vocab_size()};
  const auto facts =
      read_facts(testing::data_dir() / "facts" / "stories_two_phrasings.jsonl").facts;
  const EditingOptions o = two_phrasings_options();
  const auto full = cross_lingual_editing(model, tok, facts, o);
  auto w = o;
  w.doses = {0.25, 0.5};
  const auto dosed = cross_lingual_editing(model, tok, facts, w);
  BOOST_REQUIRE(!full.facts.empty());
  BOOST_REQUIRE(dosed.facts.size() == full.facts.size());
  const KnowledgeProbe probe(model, tok);
  std::size_t recomputed = 0;
  for (std::size_t i = 0; i < full.facts.size(); ++i) {
    const auto& f = full.facts[i];
    const auto& g = dosed.facts[i];
    std::vector<const EditMeasure*> at_full;
    std::map<std::string, std::size_t> per_mode;
    for (const auto& e : g.measures) {
      ++per_mode[e.mode];
      if (e.mode.find('@') == std::string::npos) at_full.push_back(&e);
    }
    BOOST_REQUIRE(at_full.size() == f.measures.size());
    for (std::size_t k = 0; k < at_full.size(); ++k) {
      BOOST_TEST(at_full[k]->set == f.measures[k].set);
      BOOST_TEST(at_full[k]->mode == f.measures[k].mode);
      BOOST_TEST(at_full[k]->p_old_after == f.measures[k].p_old_after);
      BOOST_TEST((at_full[k]->p_new_after == f.measures[k].p_new_after));
    }
    for (const std::string d : {"@0.25", "@0.5"}) {
      BOOST_TEST(per_mode["erase" + d] == per_mode["erase"]);
      BOOST_TEST(per_mode["edit" + d] == per_mode["edit"]);
    }
    // Recompute the first fact's real-set measures at each dose with one call each.
    if (i != 0) continue;
    std::size_t at = 0;
    while (facts[at].id != g.fact) ++at;
    const auto sib = detail::sibling_fact(facts, at, o.languages);
    BOOST_REQUIRE(sib.has_value());
    std::map<std::pair<std::string, std::string>, double> full_old;  // (set, language) → erase
    for (const auto& e : g.measures)
      if (e.mode == "erase") full_old[{e.set, e.language}] = e.p_old_after;
    std::size_t weaker = 0;  // dose erases that leave P(old) elsewhere than the full one
    for (const auto& e : g.measures) {
      const auto at_sign = e.mode.find('@');
      if (at_sign == std::string::npos || e.set.find('~') != std::string::npos) continue;
      const double d = std::stod(e.mode.substr(at_sign + 1));
      const bool is_edit = e.mode.rfind("edit@", 0) == 0;
      if (!is_edit)
        weaker +=
            std::abs(e.p_old_after - full_old.at({e.set, e.language})) > 1e-3 * e.p_old_before;
      const auto old_f =
          probe.encode(facts[at].prompts.at(e.language), facts[at].answers.at(e.language));
      const auto src_old =
          probe.encode(facts[at].prompts.at(e.source), facts[at].answers.at(e.source));
      const auto src_new =
          probe.encode(facts[at].prompts.at(e.source), facts[*sib].answers.at(e.source));
      ValueVectorEdit<LlamaModel<float>> guard(model, g.sets.at(e.set));
      guard.edit(src_old.targets.front(),
                 is_edit ? std::optional<TokenId>(src_new.targets.front()) : std::nullopt, d * o.l1,
                 is_edit ? d * o.l2 : 0.0, g.activations.at(e.set));
      const double p = detail::answer_probability(model, old_f);
      BOOST_TEST(std::abs(e.p_old_after - p) <= 1e-4 * p + 1e-10, e.set << " " << e.mode);
      ++recomputed;
    }
    // read back from JSON, modes included; a mode that is not written as dose_mode writes it
    // is refused
    const auto back =
        editing_fact_from_json(to_json(g), model.num_layers(), model.ffn_width(), "t");
    BOOST_REQUIRE(back.measures.size() == g.measures.size());
    for (std::size_t k = 0; k < g.measures.size(); ++k) {
      BOOST_TEST(back.measures[k].mode == g.measures[k].mode);
      BOOST_TEST(back.measures[k].p_old_after == g.measures[k].p_old_after);
      BOOST_TEST((back.measures[k].p_new_after == g.measures[k].p_new_after));
    }
    BOOST_TEST(weaker > 0u);
    // (erase measures have no P(new), so only the mode can make these fail)
    for (const std::string bad :
         {"erase@0.250", "erase@", "erase@1.0", "erase@x", "erase@1", "suppress@0.5", "erase@-1"}) {
      auto j = to_json(g);
      for (auto& m : j["measures"])
        if (m["mode"] == "erase@0.25") m["mode"] = bad;
      BOOST_CHECK_THROW(editing_fact_from_json(j, model.num_layers(), model.ffn_width(), "t"),
                        FormatError);
    }
  }
  BOOST_TEST(recomputed >= 8u);
  // Absurd doses are refused by name.
  for (const std::vector<double>& bad : {std::vector<double>{1.0},
                                         {0.5, 0.5},
                                         {-0.5},
                                         {0.0},
                                         {1e3},
                                         std::vector<double>(9, 0.5),
                                         {std::nan("")},
                                         {1.0000001},     // %g would write it as 1
                                         {0.1234567}}) {  // not exact in 6 digits
    auto b = o;
    b.doses = bad;
    BOOST_CHECK_THROW(cross_lingual_editing(model, tok, facts, b), ArgumentError);
  }
}

BOOST_AUTO_TEST_CASE(an_interrupted_run_resumes_to_the_same_report) {
  // `knprobe edit` checkpoints each fact's outcome (EditingOptions::on_fact) and resumes from
  // them (EditingOptions::resumed): every fact is reported exactly once, as soon as it is decided,
  // and a run resumed from the first half of the outcomes — read back from their JSON — writes
  // the same report to the byte as the uninterrupted run, with and without refinement.
  auto model = LlamaModel<float>::load(testing::stories_dir() / "stories260K.bin");
  const Llama2cTokenizer tok{testing::stories_dir() / "tok512.bin", model.vocab_size()};
  auto facts = read_facts(testing::data_dir() / "facts" / "stories_factcheck.jsonl").facts;
  facts.resize(8);
  // no other fact of their relation: skipped in pass 1, with the reason
  facts.insert(facts.begin() + 2,
               Fact{"lonely", "only-one", {{"en", "Once upon a time"}}, {{"en", " there"}}});
  facts.insert(facts.begin() + 6,
               Fact{"lonely2", "only-two", {{"en", "One day, a little"}}, {{"en", " girl"}}});
  for (const double generic : {0.0, 0.5}) {
    EditingOptions o;
    o.languages = {"en"};
    o.thresholds = {{"en", 0.3}};
    o.attribution.steps = 4;
    o.unrelated = 2;
    o.generic_fraction = generic;
    std::vector<std::pair<std::string, nlohmann::json>> outcomes;  // fact id, record
    auto record = [&](const EditingOutcome& r) {
      BOOST_REQUIRE(r.result.has_value() != r.skipped.has_value());
      if (r.result)
        outcomes.push_back({r.result->fact, to_json(*r.result)});
      else
        outcomes.push_back({r.skipped->fact, {{"reason", r.skipped->reason}}});
    };
    o.on_fact = record;
    const auto full = cross_lingual_editing(model, tok, facts, o);
    BOOST_REQUIRE(full.skipped.size() >= 2u);
    BOOST_TEST(full.skipped[0].fact == "lonely");  // in fact order
    BOOST_TEST(full.skipped[1].fact == "lonely2");
    BOOST_REQUIRE(outcomes.size() == facts.size());
    std::set<std::string> once;
    for (const auto& [id, rec] : outcomes) BOOST_TEST(once.insert(id).second);

    auto r = o;
    // Every other outcome (the second skip, every other measured fact): resumed and fresh facts
    // interleave, in both passes.
    std::size_t half = 0;
    for (std::size_t k = 1; k < outcomes.size(); k += 2, ++half) {
      const auto& [id, rec] = outcomes[k];
      if (rec.contains("reason"))
        r.resumed[id].skipped = SkippedFact{id, "", rec["reason"].get<std::string>()};
      else
        r.resumed[id].result = editing_fact_from_json(rec, model.num_layers(), model.ffn_width(),
                                                      "outcome " + std::to_string(k));
    }
    std::vector<std::pair<std::string, nlohmann::json>> first = std::move(outcomes);
    outcomes.clear();
    r.on_fact = record;
    const auto resumed = cross_lingual_editing(model, tok, facts, r);
    BOOST_TEST(outcomes.size() == facts.size() - half);  // only the facts not resumed
    for (const auto& [id, rec] : outcomes) BOOST_TEST(!r.resumed.count(id));
    BOOST_TEST(to_json(resumed).dump() == to_json(full).dump());
  }
}

BOOST_AUTO_TEST_CASE(a_checkpointed_fact_is_read_back_exactly_or_refused) {
  EditingFactResult f{"f1", "r", {}, {}, {}, {}, {}};
  f.sets["en"] = NeuronSet(std::vector<Neuron>{{0, 3}, {4, 7}});
  f.dropped_generic["en"] = NeuronSet(std::vector<Neuron>{{1, 2}});
  f.activations["en"] = {{Neuron{0, 3}, -0.1234567890123456789}, {Neuron{4, 7}, 3e-310}};
  f.notes = {"en~control: none"};
  f.measures.push_back({"en", "edit", "en", "en", 0.25, 1.0 / 3.0, 1e-9, 0.7, -0.5, 0.5, 0.5});
  f.measures.push_back({"en", "suppress", "en", "en", 0.25, 0.1, {}, {}, {}, {}, {}});
  const auto j = to_json(f);
  const auto back = editing_fact_from_json(j, 5, 8, "x");
  BOOST_TEST(to_json(back).dump() == j.dump());
  BOOST_TEST(back.measures[0].p_old_after == 1.0 / 3.0);  // exact, not rounded
  auto bad = j;
  bad["sets"]["en"][1][1] = 8;  // no unit 8 in a layer of width 8
  BOOST_CHECK_THROW(editing_fact_from_json(bad, 5, 8, "x"), FormatError);
  bad = j;
  bad["measures"][0]["p_old_after"] = "0.5";
  BOOST_CHECK_THROW(editing_fact_from_json(bad, 5, 8, "x"), FormatError);
  bad = j;
  bad["measures"][0].erase("p_new_after");  // p_new_before alone
  BOOST_CHECK_THROW(editing_fact_from_json(bad, 5, 8, "x"), FormatError);
  BOOST_CHECK_THROW(editing_fact_from_json(nlohmann::json::array(), 5, 8, "x"), FormatError);
}

BOOST_AUTO_TEST_SUITE_END()
