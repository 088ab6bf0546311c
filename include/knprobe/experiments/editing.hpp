#pragma once
// Cross-lingual knowledge editing (docs/METHOD.md §6). For each fact present in every language:
//   N_l   = the neurons selected in language l (attribution + threshold t_l);
//   sets  = LIKN (∩_l N_l), each N_l, and their union ("all");
// and for every set S with every fact language l measured:
//   suppress — activations of S × 0 at l's answer positions (the papers' intervention);
//   erase    — value vectors v ← v − s λ₁ (|v|/|e_o|) e_o        (weights, undone bit-exactly);
//   edit     — v ← v − s λ₁ (|v|/|e_o|) e_o + s λ₂ (|v|/|e_t|) e_t (old → new answer, likewise),
//              s = sign of the neuron's activation at the answer position in the source language
//              (docs/METHOD.md §6: a neuron writes a·v; Dai's rule as written, s = 1, is the option
//              `EditSign::none`).
// e_o / e_t are the input embeddings of the first token of the old / new answer in the edit's
// source language: l for N_l, the first listed language for LIKN and "all". The new answer is the
// answer of the next fact of the same relation. Reported per measurement: P(old) before / after,
// for edits P(new) before / after and whether the new answer now beats the old one, and locality:
// the relative change of the answer probabilities of K facts of other relations in l (signed
// mean and mean |Δ|). The summary carries bootstrap 95 % intervals over facts.
// Reliability = measured in the source language; generality = in the other languages.
// Controls (docs/METHOD.md §10): every set S also gets "S~control" (random, S's layer histogram,
// disjoint from S) and "S~control_magnitude" (matched on |activation| at the source's answer
// positions), suppressed / erased / edited the same way, so that a change of P(old) can be told
// from what any set of that size and those layers does; their locality is not measured. A control
// that cannot be formed is absent, with the reason in the fact's `notes`.
// Where a fact has a LIKN, each N_l \ LIKN ("<l>_minus_likn", source l) and its controls are also
// suppressed (activations only, no weight edits): whether N_l moves the other language only
// through the neurons it shares with it.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "knprobe/experiments/localize.hpp"
#include "knprobe/experiments/statistics.hpp"
#include "knprobe/io/json_get.hpp"
#include "knprobe/probe/intervention.hpp"

namespace knprobe {

/// Which way an erase / edit moves a neuron's value vector.
enum class EditSign {
  activation,  ///< along the neuron's contribution: sign of its activation (default)
  none         ///< Dai's rule as written (correct only for positive activations)
};

struct EditMeasure {
  std::string set, mode, source, language;  ///< e.g. "likn", "edit", "en", "zh"
  double p_old_before = 0, p_old_after = 0;
  std::optional<double> p_new_before, p_new_after;  ///< edits only
  std::optional<double> unrelated_change;  ///< mean relative change over the K unrelated facts
  std::optional<double> unrelated_abs;     ///< mean |relative change| over them
  std::optional<double> negative_share;    ///< weight edits: share of the set with a < 0 (source)
  double old_change() const {  // p_old_before ≥ 1e-300 is checked when the fact is measured
    return p_old_before > 0 ? (p_old_after - p_old_before) / p_old_before : 0.0;
  }
  /// Edits: the new answer now has a higher probability than the old one.
  std::optional<bool> flipped() const {
    if (!p_new_after) return std::nullopt;
    return *p_new_after > p_old_after;
  }
};

struct EditingFactResult {
  std::string fact, relation;
  /// "likn", "all", one per language, and "<l>_minus_likn" (N_l \ LIKN) where a LIKN exists
  std::map<std::string, NeuronSet> sets;
  std::map<std::string, NeuronSet> dropped_generic;  ///< per language (generic_fraction > 0)
  /// Per set: each neuron's activation at the source's first answer position (its sign is the
  /// direction of the weight edits).
  std::map<std::string, std::map<Neuron, double>> activations;
  std::vector<EditMeasure> measures;
  std::vector<std::string> notes;  ///< why a control set is missing
};

/// What became of one fact: measured (`result`), or skipped with the reason (`skipped`).
struct EditingOutcome {
  std::optional<EditingFactResult> result;
  std::optional<SkippedFact> skipped;
};

struct EditingOptions {
  std::vector<std::string> languages{"en", "zh"};
  std::map<std::string, double> thresholds{{"en", 0.3}, {"zh", 0.2}};
  AttributionOptions attribution;
  double l1 = 1.0, l2 = 8.0;  ///< Dai's edit strengths
  /// Extra strengths as multiples d of (λ₁, λ₂), for a dose–response: every set and control is
  /// also erased with d·λ₁ and edited with d·λ₁, d·λ₂ (modes "erase@d", "edit@d"), so that sets
  /// can be told from their controls where the full strength saturates P(old). At most 8, each
  /// in (0, 100] and not 1; empty by default.
  std::vector<double> doses;
  int max_tokens = 512;  ///< longest prompt + answer accepted (KnowledgeProbe::set_max_tokens)
  EditSign sign = EditSign::activation;
  int unrelated = 10;          ///< K facts of other relations for locality (seeded)
  bool controls = true;        ///< also measure the random and magnitude-matched control sets
  double control_band = 0.02;  ///< magnitude-matched control: |a|-rank window / layer width
  /// Also suppress N_l \ LIKN (set "<l>_minus_likn") and its controls where the fact has a LIKN.
  bool minus_likn = true;
  /// Dai's refinement before editing: drop from each fact's per-language set the neurons selected
  /// for more than this share of the facts of other relations (0 = off; localize.hpp's rule).
  double generic_fraction = 0;
  /// Selected sets given in advance, fact id → language → set (e.g. a run's results file,
  /// run_selections): a (fact, language) found here is not attributed again; the caller
  /// vouches that they were selected with `attribution` and `thresholds`.
  std::map<std::string, std::map<std::string, NeuronSet>> given_sets;
  std::uint64_t seed = 42;
  BootstrapOptions bootstrap;
  /// Once per fact in each of the two passes ("select <id>", then "measure <id>").
  std::function<void(const std::string&)> progress;
  /// Checkpointing (`knprobe edit` keeps <out>/editing.partial.jsonl): called once per fact with
  /// its outcome — measured, or skipped with the reason — as soon as it is decided.
  std::function<void(const EditingOutcome&)> on_fact;
  /// Outcomes of an earlier, interrupted run of the same experiment (same model, facts and
  /// options; the caller vouches), by fact id: these facts are taken as they are, not measured
  /// again (and, without refinement, not attributed again). A fact's outcome depends only on the
  /// fact list, the options and the model, so a resumed report equals an uninterrupted one.
  std::map<std::string, EditingOutcome> resumed;
};

struct EditingReport {
  std::vector<EditingFactResult> facts;
  std::vector<SkippedFact> skipped;
  BootstrapOptions bootstrap;
};

namespace detail {

/// Name suffix of the set N_l \ LIKN ("en_minus_likn").
inline constexpr std::string_view k_minus_likn = "_minus_likn";

/// The language whose fact an editing set is built on: l for N_l and N_l \ LIKN, the first
/// listed language for "likn" and "all".
inline std::string editing_source(const std::string& set, const std::vector<std::string>& langs) {
  if (set == "likn" || set == "all") return langs.front();
  if (set.ends_with(k_minus_likn)) return set.substr(0, set.size() - k_minus_likn.size());
  return set;
}

/// Mode name of an erase / edit at dose d: "erase" at d = 1, else "erase@0.25".
inline std::string dose_mode(const char* mode, double d) {
  if (d == 1.0) return mode;
  char buf[32];
  std::snprintf(buf, sizeof buf, "@%g", d);
  return mode + std::string(buf);
}

/// Why `doses` cannot be measured, or "" when they can: at most 8, each finite, in (0, 100], not 1
/// (the full strength, always measured), written by dose_mode as a text that reads back as the
/// same number (at most 6 significant digits: 0.25, 0.125, 1e-3), and no two alike.
inline std::string doses_problem(const std::vector<double>& doses) {
  if (doses.size() > 8) return std::to_string(doses.size()) + " doses; at most 8";
  for (std::size_t k = 0; k < doses.size(); ++k) {
    const double d = doses[k];
    std::ostringstream os;
    os << d;
    if (!std::isfinite(d) || d <= 0 || d > 100) return "dose " + os.str() + " is not in (0, 100]";
    const std::string mode = dose_mode("", d);
    if (mode.empty() || std::strtod(mode.c_str() + 1, nullptr) != d)
      return "dose " + os.str() +
             " is the full strength or is not written exactly with 6 significant digits "
             "(1 is always measured; give e.g. 0.25, 0.125)";
    for (std::size_t m = 0; m < k; ++m)
      if (doses[m] == d) return "dose " + os.str() + " is given twice";
  }
  return {};
}

/// Index of the next fact (cyclically) of the same relation with all `langs`, other answers.
inline std::optional<std::size_t> sibling_fact(const std::vector<Fact>& facts, std::size_t i,
                                               const std::vector<std::string>& langs) {
  for (std::size_t k = 1; k < facts.size(); ++k) {
    const auto& g = facts[(i + k) % facts.size()];
    if (g.relation != facts[i].relation) continue;
    bool ok = true;
    for (const auto& l : langs)
      ok = ok && g.answers.count(l) && g.prompts.count(l) &&
           g.answers.at(l) != facts[i].answers.at(l);
    if (ok) return (i + k) % facts.size();
  }
  return std::nullopt;
}

}  // namespace detail

/// Runs the editing experiment; `model` is edited in place and restored after every edit.
template <ProbeableModel M>
EditingReport cross_lingual_editing(M& model, const Tokenizer& tok, const std::vector<Fact>& facts,
                                    const EditingOptions& o) {
  KNPROBE_REQUIRE(!facts.empty(), ArgumentError, "editing: no facts");
  KNPROBE_REQUIRE(!o.languages.empty(), ArgumentError, "editing: no languages");
  for (const auto& l : o.languages)
    KNPROBE_REQUIRE(o.thresholds.count(l), ArgumentError, "editing: no threshold for language '", l,
                    "'");
  KNPROBE_REQUIRE(o.unrelated >= 1, ArgumentError, "editing: K = ", o.unrelated,
                  " unrelated facts; at least 1 is needed for locality");
  KNPROBE_REQUIRE(o.generic_fraction >= 0 && o.generic_fraction < 1, ArgumentError,
                  "editing: generic fraction ", o.generic_fraction, " must be in [0, 1)");
  if (const std::string why = detail::doses_problem(o.doses); !why.empty())
    throw ArgumentError("editing: " + why);
  KnowledgeProbe<M> probe(model, tok);
  probe.set_max_tokens(o.max_tokens);
  EditingReport rep;
  rep.bootstrap = o.bootstrap;
  // Pass 1: attribute and select every (fact, language), so that generic neurons can be found
  // across facts before any set is measured.
  std::vector<std::optional<EditingFactResult>> selected(facts.size());
  std::vector<std::optional<std::size_t>> sibling(facts.size());
  // Why a fact was skipped, by position: the report lists skipped facts in fact order, whichever
  // pass skipped them and whether they were resumed.
  std::vector<std::optional<std::string>> skip(facts.size());
  auto skip_fact = [&](std::size_t i, std::string why) {
    skip[i] = why;
    if (o.on_fact && !o.resumed.count(facts[i].id))
      o.on_fact(EditingOutcome{std::nullopt, SkippedFact{facts[i].id, "", std::move(why)}});
  };
  for (std::size_t i = 0; i < facts.size(); ++i) {
    const Fact& fact = facts[i];
    if (o.progress) o.progress("select " + fact.id);
    // A resumed fact needs no sets of its own; with refinement, every fact's sets are needed to
    // find the generic neurons.
    if (o.generic_fraction == 0 && o.resumed.count(fact.id)) continue;
    try {
      for (const auto& l : o.languages)
        KNPROBE_REQUIRE(fact.prompts.count(l) && fact.answers.count(l), ArgumentError,
                        "no prompt or answer in language '", l, "'");
      sibling[i] = detail::sibling_fact(facts, i, o.languages);
      KNPROBE_REQUIRE(sibling[i].has_value(), ArgumentError, "no other fact of relation '",
                      fact.relation,
                      "' with a different answer in every language to take a new answer from");
      EditingFactResult fr{fact.id, fact.relation, {}, {}, {}, {}, {}};
      const auto given = o.given_sets.find(fact.id);
      for (const auto& l : o.languages) {
        // encoded either way: a fact this command cannot encode (too long, ...) is skipped alike
        const auto f = probe.encode(fact.prompts.at(l), fact.answers.at(l));
        if (given != o.given_sets.end() && given->second.count(l)) {
          fr.sets[l] = given->second.at(l);
          continue;
        }
        fr.sets[l] =
            KnowledgeProbe<M>::select(probe.attribute(f, o.attribution), o.thresholds.at(l))
                .neurons;
      }
      selected[i] = std::move(fr);
    } catch (const Error& e) {
      skip_fact(i, e.what());
    }
  }
  if (o.generic_fraction > 0)  // Dai's refinement, per language, over the facts selected
    for (const auto& l : o.languages) {
      std::vector<std::pair<std::string, const NeuronSet*>> sets;
      std::vector<std::size_t> at;
      for (std::size_t i = 0; i < facts.size(); ++i)
        if (selected[i]) {
          sets.push_back({facts[i].relation, &selected[i]->sets.at(l)});
          at.push_back(i);
        }
      const auto generic = detail::generic_neurons(sets, o.generic_fraction);
      for (std::size_t k = 0; k < at.size(); ++k) {
        auto& fr = *selected[at[k]];
        fr.dropped_generic[l] = generic[k];
        std::vector<Neuron> kept;
        for (const auto& n : fr.sets.at(l))
          if (!generic[k].contains(n)) kept.push_back(n);
        fr.sets[l] = NeuronSet(std::move(kept));
      }
    }
  // Pass 2: measure every selected fact's sets.
  for (std::size_t i = 0; i < facts.size(); ++i) {
    const Fact& fact = facts[i];
    if (o.progress) o.progress("measure " + fact.id);
    if (const auto r = o.resumed.find(fact.id); r != o.resumed.end()) {
      KNPROBE_REQUIRE(r->second.result.has_value() != r->second.skipped.has_value(), ArgumentError,
                      "editing: the resumed outcome of fact '", fact.id,
                      "' must be either a result or a skip");
      if (r->second.result) {
        KNPROBE_REQUIRE(r->second.result->fact == fact.id, ArgumentError,
                        "editing: the resumed outcome of fact '", fact.id, "' is of fact '",
                        r->second.result->fact, "'");
        rep.facts.push_back(*r->second.result);
        skip[i].reset();
      } else {
        skip[i] = r->second.skipped->reason;
      }
      continue;
    }
    if (!selected[i]) continue;
    std::optional<EditingFactResult> measured;
    try {
      const std::size_t sib = *sibling[i];
      std::map<std::string, EncodedFact> old_f, new_f;
      std::map<std::string, std::vector<EncodedFact>> unrel_f;
      std::map<std::string, typename M::Trace> traces;  // of the old fact, for activation signs
      EditingFactResult fr = std::move(*selected[i]);
      std::vector<NeuronSet> per_lang;
      for (const auto& l : o.languages) {
        old_f.emplace(l, probe.encode(fact.prompts.at(l), fact.answers.at(l)));
        new_f.emplace(l, probe.encode(fact.prompts.at(l), facts[sib].answers.at(l)));
        for (auto& [id, g] : detail::unrelated_facts(probe, facts, i, l, o.unrelated, o.seed))
          unrel_f[l].push_back(std::move(g));
        traces.emplace(l, model.trace(old_f.at(l).tokens));
        per_lang.push_back(fr.sets.at(l));
      }
      fr.sets["likn"] = likn(per_lang);
      fr.sets["all"] = at_least(1, per_lang);
      if (o.minus_likn && !fr.sets.at("likn").empty())
        for (const auto& l : o.languages) {
          std::vector<Neuron> rest;
          for (const auto& n : fr.sets.at(l))
            if (!fr.sets.at("likn").contains(n)) rest.push_back(n);
          if (!rest.empty())
            fr.sets[l + std::string(detail::k_minus_likn)] = NeuronSet(std::move(rest));
        }
      // Clean probabilities, measured once, in one batched call: per language the old and the
      // new answer and the K unrelated facts.
      std::map<std::string, double> p_old, p_new;
      std::map<std::string, std::vector<double>> p_unrel;
      {
        std::vector<detail::PatternRequest> clean;
        for (const auto& l : o.languages) {
          clean.push_back({&old_f.at(l), {InterventionPattern{}}});
          clean.push_back({&new_f.at(l), {InterventionPattern{}}});
          for (const auto& g : unrel_f.at(l)) clean.push_back({&g, {InterventionPattern{}}});
        }
        const auto pc = detail::answer_probabilities(model, clean);
        std::size_t r = 0;
        for (const auto& l : o.languages) {
          p_old[l] = pc[r++][0];
          p_new[l] = pc[r++][0];
          for (std::size_t k = 0; k < unrel_f.at(l).size(); ++k) p_unrel[l].push_back(pc[r++][0]);
        }
      }
      for (const auto& l : o.languages) {
        // relative changes are undefined at P = 0: the fact is skipped with the reason
        KNPROBE_REQUIRE(p_old[l] >= 1e-300, NumericError, "[", l, "] P(old answer) = ", p_old[l],
                        ": its relative change is undefined");
        for (double p : p_unrel[l])
          KNPROBE_REQUIRE(p >= 1e-300, NumericError, "[", l, "] an unrelated fact has P = ", p,
                          ": its relative change is undefined");
      }
      // Locality: mean signed and absolute relative change of the K unrelated answers in l, from
      // their probabilities `after` (in the order of unrel_f[l]).
      auto locality = [&](EditMeasure& e, const std::string& l, const std::vector<double>& after) {
        double s = 0, sa = 0;
        for (std::size_t k = 0; k < after.size(); ++k) {
          const double c = (after[k] - p_unrel[l][k]) / p_unrel[l][k];  // p ≥ 1e-300, checked
          s += c, sa += std::abs(c);
        }
        e.unrelated_change = s / static_cast<double>(after.size());
        e.unrelated_abs = sa / static_cast<double>(after.size());
      };
      // The sets to measure: each named set, then (with controls) its two control sets, which
      // are seeded by (seed, fact, set name) and matched at the source language's fact.
      struct Measured {
        std::string name, source;
        NeuronSet set;
        bool control;
        bool suppress_only;  ///< N_l \ LIKN and its controls: no weight edits
      };
      std::vector<Measured> todo;
      for (const auto& [name, set] : fr.sets) {
        if (set.empty()) continue;
        const std::string source = detail::editing_source(name, o.languages);
        const bool only = name.ends_with(detail::k_minus_likn);
        todo.push_back({name, source, set, false, only});
        if (!o.controls) continue;
        const std::uint64_t cs = o.seed ^ detail::fnv1a(fact.id + '\x1f' + name + "\x1f" + "edit");
        // N_l \ LIKN's controls avoid every knowledge neuron of the fact: a LIKN neuron in them
        // would move the other language and hide what the set itself does there.
        const NeuronSet avoid = only ? fr.sets.at("all") : NeuronSet{};
        try {
          todo.push_back(
              {name + "~control", source, probe.random_control(set, cs, avoid), true, only});
        } catch (const Error& e) {
          fr.notes.push_back(name + "~control: " + e.what());
        }
        try {
          todo.push_back({name + "~control_magnitude", source,
                          probe.magnitude_control(set, old_f.at(source), cs, o.control_band, avoid),
                          true, only});
        } catch (const Error& e) {
          fr.notes.push_back(name + "~control_magnitude: " + e.what());
        }
      }
      // Activation suppression of several sets at once, at each language's answer positions: per
      // language the old fact under every set, and (sets that are not controls) each unrelated
      // fact under every set, as one batched call. suppressed[i][l] = {P(old) after, the unrelated
      // facts' P after}.
      using Suppressed = std::map<std::string, std::pair<double, std::vector<double>>>;
      std::vector<std::optional<Suppressed>> suppressed(todo.size());
      auto suppress_batch = [&](const std::vector<std::size_t>& items) {
        const bool has_real =
            std::ranges::any_of(items, [&](std::size_t i) { return !todo[i].control; });
        std::vector<detail::PatternRequest> rq;
        for (const auto& l : o.languages) {
          detail::PatternRequest r{&old_f.at(l), {}};
          for (std::size_t i : items)
            r.patterns.push_back(suppress(todo[i].set, r.fact->positions));
          rq.push_back(std::move(r));
          for (const auto& g : unrel_f.at(l)) {
            detail::PatternRequest u{&g, {}};
            for (std::size_t i : items)
              if (!todo[i].control) u.patterns.push_back(suppress(todo[i].set, g.positions));
            if (has_real) rq.push_back(std::move(u));
          }
        }
        const auto p = detail::answer_probabilities(model, rq);
        std::size_t r = 0;
        for (const auto& l : o.languages) {
          const auto& po = p[r++];
          std::vector<std::size_t> u_rows;  // the request of each unrelated fact
          if (has_real)
            for (std::size_t k = 0; k < unrel_f.at(l).size(); ++k) u_rows.push_back(r++);
          std::size_t real = 0;  // column of item i among the non-control items
          for (std::size_t n = 0; n < items.size(); ++n) {
            const std::size_t i = items[n];
            if (!suppressed[i]) suppressed[i].emplace();
            auto& [after, unrel] = (*suppressed[i])[l];
            after = po[n];
            if (!todo[i].control) {
              for (std::size_t row : u_rows) unrel.push_back(p[row][real]);
              ++real;
            }
          }
        }
      };
      // The sets, their controls, the N_l \ LIKN sets and their controls in four separate
      // batches, so that no set's values depend on whether controls or N_l \ LIKN are measured
      // (the batch's composition decides the GEMM blockings); a batch of controls that fails is
      // retried one control at a time, and a control that cannot be measured is noted, not the
      // fact.
      for (const bool only : {false, true}) {
        std::vector<std::size_t> real, controls;
        for (std::size_t i = 0; i < todo.size(); ++i)
          if (todo[i].suppress_only == only) (todo[i].control ? controls : real).push_back(i);
        if (!real.empty()) suppress_batch(real);
        if (!controls.empty()) try {
            suppress_batch(controls);
          } catch (const Error&) {
            for (std::size_t i : controls) {
              suppressed[i].reset();
              try {
                suppress_batch({i});
              } catch (const Error& e) {
                suppressed[i].reset();
                fr.notes.push_back(todo[i].name + ": " + e.what());
              }
            }
          }
      }
      auto measure = [&](const Measured& item, const Suppressed& sup) {
        const auto& [name, source, set, control, suppress_only] = item;
        for (const auto& l : o.languages) {  // activation suppression at l's answer positions
          EditMeasure e{name, "suppress", source, l, p_old[l], 0, {}, {}, {}, {}, {}};
          e.p_old_after = sup.at(l).first;
          if (!control) locality(e, l, sup.at(l).second);
          fr.measures.push_back(e);
        }
        // The activation of every neuron of the set at the source's first answer position: the
        // sign of its contribution a·v, which the edit follows.
        std::map<Neuron, double> act;
        std::size_t negative = 0;
        const int p0 = old_f.at(source).positions.front();
        for (const auto& n : set) {
          act[n] = static_cast<double>(traces.at(source).activations(n.layer)(p0, n.unit));
          negative += act[n] < 0;
        }
        fr.activations[name] = act;
        if (suppress_only) return;
        std::vector<double> doses{1.0};  // the full strength first, then the dose–response
        doses.insert(doses.end(), o.doses.begin(), o.doses.end());
        for (const double d : doses)
          for (const bool is_edit : {false, true}) {  // weight edits, undone by the guard
            ValueVectorEdit<M> guard(model, set);
            const TokenId eo = old_f.at(source).targets.front();
            const std::optional<TokenId> et =
                is_edit ? std::optional<TokenId>(new_f.at(source).targets.front()) : std::nullopt;
            const double l1 = d * o.l1, l2 = is_edit ? d * o.l2 : 0.0;
            if (o.sign == EditSign::activation)
              guard.edit(eo, et, l1, l2, act);
            else
              guard.edit(eo, et, l1, l2);
            // Everything measured under this edit, in one batched call: per language the old
            // answer, the new one (edits) and the unrelated facts (sets that are not controls).
            std::vector<detail::PatternRequest> rq;
            for (const auto& l : o.languages) {
              rq.push_back({&old_f.at(l), {InterventionPattern{}}});
              if (is_edit) rq.push_back({&new_f.at(l), {InterventionPattern{}}});
              if (!control)
                for (const auto& g : unrel_f.at(l)) rq.push_back({&g, {InterventionPattern{}}});
            }
            const auto p = detail::answer_probabilities(model, rq);
            std::size_t r = 0;
            for (const auto& l : o.languages) {
              EditMeasure e{name,     detail::dose_mode(is_edit ? "edit" : "erase", d),
                            source,   l,
                            p_old[l], 0,
                            {},       {},
                            {},       {},
                            {}};
              e.p_old_after = p[r++][0];
              if (is_edit) {
                e.p_new_before = p_new[l];
                e.p_new_after = p[r++][0];
              }
              if (!control) {
                std::vector<double> after;
                for (std::size_t k = 0; k < unrel_f.at(l).size(); ++k) after.push_back(p[r++][0]);
                locality(e, l, after);
              }
              e.negative_share = static_cast<double>(negative) / static_cast<double>(set.size());
              fr.measures.push_back(e);
            }
          }
      };
      for (std::size_t i = 0; i < todo.size(); ++i) {
        const auto& item = todo[i];
        if (!suppressed[i]) continue;  // a control that could not be measured: noted above
        const std::size_t before = fr.measures.size();
        try {
          measure(item, *suppressed[i]);
        } catch (const Error& e) {  // a control that cannot be measured is noted, not the fact
          if (!item.control) throw;
          fr.measures.resize(before);
          fr.activations.erase(item.name);
          fr.notes.push_back(item.name + ": " + e.what());
        }
      }
      measured = std::move(fr);
    } catch (const Error& e) {
      skip_fact(i, e.what());
    }
    if (measured) {  // outside the try: a checkpoint that cannot be written is not a skipped fact
      if (o.on_fact) o.on_fact(EditingOutcome{*measured, std::nullopt});
      rep.facts.push_back(std::move(*measured));
    }
  }
  for (std::size_t i = 0; i < facts.size(); ++i)
    if (skip[i]) rep.skipped.push_back({facts[i].id, "", *skip[i]});
  return rep;
}

/// One fact's result: {fact, relation, sets {name: [[layer, unit]]}, dropped_generic {language:
/// [[layer, unit]]}, notes [..], activations {set: [[layer, unit, a]]}, measures [{set, mode,
/// source, language, p_old_before, p_old_after, p_new_before, p_new_after, unrelated_change,
/// unrelated_abs, negative_share}]} — the optional fields only when present. Numbers are written
/// so that editing_fact_from_json reads back the same doubles.
inline nlohmann::json to_json(const EditingFactResult& f) {
  nlohmann::json jf{{"fact", f.fact}, {"relation", f.relation}};
  for (const auto& [name, set] : f.sets) jf["sets"][name] = detail::neurons_json(set);
  for (const auto& [lang, set] : f.dropped_generic)
    jf["dropped_generic"][lang] = detail::neurons_json(set);
  if (!f.notes.empty()) jf["notes"] = f.notes;
  for (const auto& [name, act] : f.activations)
    for (const auto& [n, a] : act) jf["activations"][name].push_back({n.layer, n.unit, a});
  for (const auto& e : f.measures) {
    nlohmann::json m{{"set", e.set},
                     {"mode", e.mode},
                     {"source", e.source},
                     {"language", e.language},
                     {"p_old_before", e.p_old_before},
                     {"p_old_after", e.p_old_after}};
    if (e.p_new_after) m["p_new_before"] = *e.p_new_before, m["p_new_after"] = *e.p_new_after;
    if (e.unrelated_change) m["unrelated_change"] = *e.unrelated_change;
    if (e.unrelated_abs) m["unrelated_abs"] = *e.unrelated_abs;
    if (e.negative_share) m["negative_share"] = *e.negative_share;
    jf["measures"].push_back(m);
  }
  return jf;
}

/// Reads back what to_json(EditingFactResult) wrote, for a model of `layers` × `width` neurons.
/// FormatError "<where>: ..." naming the first field that is missing, of the wrong type, out of
/// range or not finite.
inline EditingFactResult editing_fact_from_json(const nlohmann::json& j, int layers, int width,
                                                const std::string& where) {
  EditingFactResult f;
  f.fact = io::json_string(io::json_at(j, "fact", where), where + ": fact");
  f.relation = io::json_string(io::json_at(j, "relation", where), where + ": relation");
  auto object = [&](const char* key) -> const nlohmann::json* {
    const auto it = j.find(key);
    if (it == j.end()) return nullptr;
    if (!it->is_object()) throw FormatError(where + ": '" + key + "' is not an object");
    return &*it;
  };
  auto neuron = [&](const nlohmann::json& n, std::size_t size, const std::string& at) {
    if (!n.is_array() || n.size() != size)
      throw FormatError(at + ": expected an array of " + std::to_string(size) + " numbers");
    return Neuron{io::json_int<int>(n[0], 0, layers - 1, at + ": layer"),
                  io::json_int<int>(n[1], 0, width - 1, at + ": unit")};
  };
  auto sets = [&](const nlohmann::json* obj, const std::string& key) {
    std::map<std::string, NeuronSet> out;
    if (!obj) return out;
    for (auto it = obj->begin(); it != obj->end(); ++it) {
      const std::string at = where + ": " + key + "." + it.key();
      if (!it.value().is_array()) throw FormatError(at + ": not an array");
      std::vector<Neuron> v;
      for (const auto& n : it.value()) v.push_back(neuron(n, 2, at));
      out[it.key()] = NeuronSet(std::move(v));
    }
    return out;
  };
  f.sets = sets(object("sets"), "sets");
  f.dropped_generic = sets(object("dropped_generic"), "dropped_generic");
  if (const auto it = j.find("notes"); it != j.end()) {
    if (!it->is_array()) throw FormatError(where + ": 'notes' is not an array");
    for (const auto& x : *it) f.notes.push_back(io::json_string(x, where + ": notes"));
  }
  if (const auto* act = object("activations"))
    for (auto it = act->begin(); it != act->end(); ++it) {
      const std::string at = where + ": activations." + it.key();
      if (!it.value().is_array()) throw FormatError(at + ": not an array");
      auto& dst = f.activations[it.key()];
      for (const auto& n : it.value())
        dst[neuron(n, 3, at)] = io::json_number(n[2], -1e300, 1e300, at + ": activation");
    }
  const auto mit = j.find("measures");  // absent when nothing could be measured
  const nlohmann::json ms = mit == j.end() ? nlohmann::json::array() : *mit;
  if (!ms.is_array()) throw FormatError(where + ": 'measures' is not an array");
  for (std::size_t k = 0; k < ms.size(); ++k) {
    const auto& m = ms[k];
    const std::string at = where + ": measures[" + std::to_string(k) + "]";
    auto str = [&](const char* key) { return io::json_string(io::json_at(m, key, at), at); };
    // Probabilities (float32 products: a hair above 1 is rounding), shares and relative changes
    // of probabilities have their ranges; a checkpoint's value outside them is damage.
    auto prob = [&](const char* key) {
      return io::json_number(io::json_at(m, key, at), 0, 1 + 1e-6, at + "." + key);
    };
    auto prob_opt = [&](const char* key) -> std::optional<double> {
      if (!m.contains(key)) return std::nullopt;
      return prob(key);
    };
    auto ranged_opt = [&](const char* key, double lo, double hi) -> std::optional<double> {
      if (!m.contains(key)) return std::nullopt;
      return io::json_number(m[key], lo, hi, at + "." + key);
    };
    const std::string mode = str("mode");
    // "suppress", "erase", "edit", or a dose of the last two as dose_mode writes it ("edit@0.25")
    const std::string base = mode.substr(0, mode.find('@'));
    bool known = mode == "suppress" || (mode == base && (base == "erase" || base == "edit"));
    if (!known && (base == "erase" || base == "edit")) {
      char* end = nullptr;
      const std::string dose = mode.substr(base.size() + 1);
      const double d = std::strtod(dose.c_str(), &end);
      known = !dose.empty() && end == dose.c_str() + dose.size() && std::isfinite(d) && d > 0 &&
              d <= 100 && detail::dose_mode(base.c_str(), d) == mode;
    }
    if (!known)
      throw FormatError(at + ".mode: '" + mode +
                        "' is not suppress / erase / edit / erase@d / edit@d");
    EditMeasure e{str("set"),
                  mode,
                  str("source"),
                  str("language"),
                  prob("p_old_before"),
                  prob("p_old_after"),
                  prob_opt("p_new_before"),
                  prob_opt("p_new_after"),
                  ranged_opt("unrelated_change", -1, 1e300),
                  ranged_opt("unrelated_abs", 0, 1e300),
                  ranged_opt("negative_share", 0, 1)};
    if (e.p_new_before.has_value() != (base == "edit") ||
        e.p_new_after.has_value() != (base == "edit"))
      throw FormatError(at + ": p_new_before and p_new_after belong to edits, and only to them");
    f.measures.push_back(std::move(e));
  }
  return f;
}

/// JSON of the report with a summary per (set, mode, reliability | generality): the relative
/// change of P(old), for edits whether the new answer now beats the old one, the signed and the
/// absolute locality change, and for weight edits the share of neurons with negative activation —
/// each a per-fact mean / median with bootstrap 95 % intervals (statistics.hpp).
inline nlohmann::json to_json(const EditingReport& rep) {
  nlohmann::json j;
  j["facts"] = nlohmann::json::array();
  struct Acc {
    std::vector<double> change, flipped, locality, locality_abs, negative;
  };
  std::map<std::string, Acc> acc;  // one value per fact: the unit the intervals resample
  std::map<std::string, std::size_t> measures;
  for (const auto& f : rep.facts) {
    std::map<std::string, Acc> fact_acc;  // this fact's measures per summary key
    j["facts"].push_back(to_json(f));
    for (const auto& e : f.measures) {
      // "likn", "all", "N_source" or "N_source_minus_likn", with a control's suffix
      // ("likn~control", ...)
      const auto tilde = e.set.find('~');
      const std::string base = e.set.substr(0, tilde);
      const std::string set_kind =
          (base == "likn" || base == "all"        ? base
           : base.ends_with(detail::k_minus_likn) ? "N_source" + std::string(detail::k_minus_likn)
                                                  : "N_source") +
          (tilde == std::string::npos ? "" : e.set.substr(tilde));
      const std::string key =
          set_kind + "/" + e.mode + "/" + (e.language == e.source ? "reliability" : "generality");
      ++measures[key];
      auto& a = fact_acc[key];
      a.change.push_back(e.old_change());
      if (auto fl = e.flipped()) a.flipped.push_back(*fl ? 1.0 : 0.0);
      if (e.unrelated_change) a.locality.push_back(*e.unrelated_change);
      if (e.unrelated_abs) a.locality_abs.push_back(*e.unrelated_abs);
      if (e.negative_share) a.negative.push_back(*e.negative_share);
    }
    // A fact contributes the mean of its measures under each key (e.g. N_en in en and N_zh in
    // zh both count as reliability): facts, not measurements, are resampled.
    auto mean = [](const std::vector<double>& v, std::vector<double>& out) {
      if (!v.empty()) out.push_back(detail::mean_of_values(v));
    };
    for (const auto& [k, fa] : fact_acc) {
      auto& a = acc[k];
      mean(fa.change, a.change);
      mean(fa.flipped, a.flipped);
      mean(fa.locality, a.locality);
      mean(fa.locality_abs, a.locality_abs);
      mean(fa.negative, a.negative);
    }
  }
  const auto& b = rep.bootstrap;
  j["bootstrap"] = {{"resamples", b.resamples}, {"level", b.level}, {"seed", b.seed}};
  for (const auto& [k, a] : acc) {
    auto& out = j["summary"][k];
    out["facts"] = a.change.size();
    out["measures"] = measures[k];
    out["old_change"] = to_json(summarize(a.change, b, k + "/old_change"));
    if (!a.flipped.empty()) out["flipped"] = to_json(summarize(a.flipped, b, k + "/flipped"));
    if (!a.locality.empty()) {  // control sets: no locality
      out["unrelated_change"] = to_json(summarize(a.locality, b, k + "/unrelated_change"));
      out["unrelated_abs"] = to_json(summarize(a.locality_abs, b, k + "/unrelated_abs"));
    }
    if (!a.negative.empty())
      out["negative_share"] = to_json(summarize(a.negative, b, k + "/negative_share"));
  }
  j["skipped"] = nlohmann::json::array();
  for (const auto& s : rep.skipped)
    j["skipped"].push_back({{"fact", s.fact}, {"reason", s.reason}});
  return j;
}

}  // namespace knprobe
