#pragma once
// The localization experiment (docs/METHOD.md §3, §4, §8) over facts in several languages:
// per (fact, language) attribute, select with the language's threshold, and verify by
// suppressing (×0) and enhancing (×2) the neurons on the fact's own prompt ("related"), on K seeded
// facts of other relations ("unrelated", signed and absolute means), with a random control of the
// same layer histogram and one matched on |activation| (docs/METHOD.md §10); per
// fact the language-independent set LIKN = ∩ N_lang and its effect in every language.
// Facts that cannot be processed are recorded with the reason; the run continues.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "knprobe/data/facts.hpp"
#include "knprobe/experiments/statistics.hpp"
#include "knprobe/probe/knowledge_probe.hpp"

namespace knprobe {

struct LocalizeOptions {
  std::vector<std::string> languages{"en", "zh"};
  std::map<std::string, double> thresholds{{"en", 0.3}, {"zh", 0.2}};  ///< AMIG's per-language t
  AttributionOptions attribution;
  bool verify = true;
  std::uint64_t seed = 42;
  int unrelated = 10;  ///< K: unrelated facts per (fact, language), other relations, seeded
  /// Where the K unrelated facts are drawn from: this list when set (`knprobe localize`: every fact
  /// read — the fact file, or the mLAMA facts of the chosen relations and languages — before
  /// sampling, screening and --limit; they are not screened), else the localized facts.
  const std::vector<Fact>* unrelated_pool = nullptr;
  double control_band = 0.02;  ///< magnitude-matched control: |a|-rank window / layer width
  BootstrapOptions bootstrap;  ///< confidence intervals of the summary
  /// Dai's refinement against generic neurons (docs/METHOD.md §10), applied by localize() when > 0:
  /// a neuron is dropped from a fact's set in a language when it is selected for more than this
  /// share of the facts of *other* relations in that language (0 = off; the summary reports how
  /// often neurons recur either way).
  double generic_fraction = 0;
  std::function<void(const std::string&)> progress;  ///< called once per (fact, language)
};

/// Relative changes (p_after − p_before) / p_before of an answer probability when a neuron set is
/// scaled: on the fact itself ("related"), on K facts of other relations ("unrelated": the mean of
/// the signed changes; "unrelated_abs": the mean of their absolute values), and for two random
/// controls of the same size — the same layer histogram ("control") and, besides, matched on
/// activation magnitude ("control_magnitude"). A control that cannot be formed is absent, with the
/// reason in `notes`.
struct EffectSet {
  std::optional<double> related, unrelated, unrelated_abs, control, control_magnitude;
  std::vector<std::string> unrelated_facts;  ///< ids of the K unrelated facts used
  std::vector<std::string> notes;            ///< why a control is missing
  /// The numeric fields with their JSON names, in the order tables show them.
  template <class S>
  static auto fields_of(S& s) {
    using P = decltype(&s.related);
    return std::array<std::pair<const char*, P>, 5>{{{"related", &s.related},
                                                     {"unrelated", &s.unrelated},
                                                     {"unrelated_abs", &s.unrelated_abs},
                                                     {"control", &s.control},
                                                     {"control_magnitude", &s.control_magnitude}}};
  }
  auto fields() const { return fields_of(*this); }
  auto fields() { return fields_of(*this); }
};

struct LanguageResult {
  std::string language, prompt, answer;
  std::vector<TokenId> answer_ids;
  double p_answer = 0;       ///< P(answer | prompt), product over answer tokens
  std::optional<bool> top1;  ///< every answer token is the model's argmax (teacher-forced)
  Attribution attribution;
  Selection selection;
  std::vector<Neuron> dropped_generic;  ///< removed from the selection by the refinement
  EffectSet suppress, enhance;
};

struct FactResult {
  std::string id, relation;
  std::map<std::string, LanguageResult> languages;
  NeuronSet likn;
  bool likn_formed = false;  ///< every language of the run has a result, so LIKN was formed
  std::map<std::string, EffectSet> likn_suppress, likn_enhance;  ///< by language, all controls
};

struct SkippedFact {
  std::string fact, language, reason;
};

struct LocalizeReport {
  std::vector<FactResult> facts;
  std::vector<SkippedFact> skipped;
  BootstrapOptions bootstrap;  ///< of the summary's intervals
};

namespace detail {

/// The logits at each answer token's position (row t: token t), from one forward pass over the
/// encoded fact: the output head runs on those rows only when the model offers it.
template <class M>
Matrix<typename M::Scalar> answer_logits(const M& m, const EncodedFact& f) requires HasLogits<M> {
  if constexpr (HasPositionLogits<M>) {
    return m.logits(m.trace(f.tokens), std::span<const int>(f.positions));
  } else {
    const auto all = m.logits(m.trace(f.tokens));
    Matrix<typename M::Scalar> z(Index(f.positions.size()), all.cols());
    for (std::size_t t = 0; t < f.positions.size(); ++t) z.row(Index(t)) = all.row(f.positions[t]);
    return z;
  }
}

/// Whether row t of `z` (the logits at f's answer positions, answer_logits) has its maximum at
/// f.targets[t] for every answer token t.
template <class Derived>
bool targets_top1(const Eigen::MatrixBase<Derived>& z, const EncodedFact& f) {
  for (std::size_t t = 0; t < f.targets.size(); ++t) {
    Index best;
    z.row(Index(t)).maxCoeff(&best);
    if (best != f.targets[t]) return false;
  }
  return true;
}

/// Whether every answer token is the model's argmax at its position (teacher-forced), from one
/// forward pass over the encoded fact; nullopt when the model exposes no logits.
template <class M>
std::optional<bool> answers_top1(const M& m, const EncodedFact& f) {
  if constexpr (HasLogits<M>)
    return targets_top1(answer_logits(m, f), f);
  else
    return std::nullopt;
}

/// Product over answer tokens of P(target) at each answer position of `f`.
template <ProbeableModel M>
double answer_probability(const M& m, const EncodedFact& f, const InterventionPattern& pat = {}) {
  std::vector<Query> qs;
  for (std::size_t t = 0; t < f.targets.size(); ++t) qs.push_back({f.positions[t], f.targets[t]});
  const std::vector<InterventionPattern> pats{pat};
  const auto p = m.probabilities(f.tokens, pats, qs);
  double prod = 1;
  for (Index q = 0; q < p.cols(); ++q) prod *= static_cast<double>(p(0, q));
  return prod;
}

/// One encoded fact with the intervention patterns to measure it under (`fact` must outlive the
/// call).
struct PatternRequest {
  const EncodedFact* fact;
  std::vector<InterventionPattern> patterns;
};

/// result[r][k] = Π_t P(target_t) at the answer positions of requests[r].fact under
/// requests[r].patterns[k]: every request from one model call when the model answers several
/// prompts at once (HasBatchedProbabilities: the rows of all requests share each layer's
/// products), one call per request otherwise. The same requests give the same values; another
/// grouping of them may differ in the last bits (other GEMM blockings).
template <ProbeableModel M>
std::vector<std::vector<double>> answer_probabilities(const M& m,
                                                      std::span<const PatternRequest> requests) {
  const std::size_t R = requests.size();
  std::vector<std::vector<Query>> qs(R);
  for (std::size_t r = 0; r < R; ++r) {
    const EncodedFact& f = *requests[r].fact;
    for (std::size_t t = 0; t < f.targets.size(); ++t)
      qs[r].push_back({f.positions[t], f.targets[t]});
  }
  std::vector<Matrix<typename M::Scalar>> p;
  if constexpr (HasBatchedProbabilities<M>) {
    std::vector<ProbabilityRequest> pr;
    for (std::size_t r = 0; r < R; ++r)
      pr.push_back({requests[r].fact->tokens, requests[r].patterns, qs[r]});
    p = m.probabilities(std::span<const ProbabilityRequest>(pr));
  } else {
    for (std::size_t r = 0; r < R; ++r)
      p.push_back(m.probabilities(requests[r].fact->tokens, requests[r].patterns, qs[r]));
  }
  std::vector<std::vector<double>> out(R);
  for (std::size_t r = 0; r < R; ++r)
    for (Index k = 0; k < p[r].rows(); ++k) {
      double prod = 1;
      for (Index q = 0; q < p[r].cols(); ++q) prod *= static_cast<double>(p[r](k, q));
      out[r].push_back(prod);
    }
  return out;
}

/// Index of the next fact (cyclically) of another relation that has `lang`.
inline std::optional<std::size_t> unrelated_fact(const std::vector<Fact>& facts, std::size_t i,
                                                 const std::string& lang) {
  for (std::size_t k = 1; k < facts.size(); ++k) {
    const auto& g = facts[(i + k) % facts.size()];
    if (g.relation != facts[i].relation && g.prompts.count(lang) && g.answers.count(lang))
      return (i + k) % facts.size();
  }
  return std::nullopt;
}

/// K unrelated facts of `fact` in `lang`: facts of `facts` of other relations with another
/// answer, drawn without replacement with a stream seeded by (seed, fact id, language) — a
/// sharded or resumed run over the same list draws the same ones; another list (more facts,
/// another order) draws others — skipping facts that cannot be encoded. Fewer than K available:
/// ArgumentError naming how many there are.
template <ProbeableModel M>
std::vector<std::pair<std::string, EncodedFact>> unrelated_facts(const KnowledgeProbe<M>& probe,
                                                                 const Fact& fact,
                                                                 const std::vector<Fact>& facts,
                                                                 const std::string& lang, int k,
                                                                 std::uint64_t seed) {
  std::vector<std::size_t> pool;
  for (std::size_t j = 0; j < facts.size(); ++j) {
    const auto& g = facts[j];
    if (g.relation != fact.relation && g.prompts.count(lang) && g.answers.count(lang) &&
        g.answers.at(lang) != fact.answers.at(lang))
      pool.push_back(j);
  }
  Rng rng(seed ^ fnv1a(fact.id + '\x1f' + lang + "\x1funrelated"));
  std::vector<std::pair<std::string, EncodedFact>> out;
  for (std::size_t n = 0; n < pool.size() && static_cast<int>(out.size()) < k; ++n) {
    std::swap(pool[n], pool[n + static_cast<std::size_t>(rng.below(pool.size() - n))]);
    const Fact& g = facts[pool[n]];
    try {
      out.emplace_back(g.id, probe.encode(g.prompts.at(lang), g.answers.at(lang)));
    } catch (const ArgumentError&) {  // too long, empty: it cannot serve as a control
    } catch (const TokenizerError&) {
    }
  }
  KNPROBE_REQUIRE(static_cast<int>(out.size()) >= k, ArgumentError, "only ", out.size(),
                  " fact(s) of other relations can serve as unrelated controls in '", lang,
                  "'; K = ", k, " are asked for");
  return out;
}

/// The same for facts[i], drawn from `facts` itself.
template <ProbeableModel M>
std::vector<std::pair<std::string, EncodedFact>> unrelated_facts(const KnowledgeProbe<M>& probe,
                                                                 const std::vector<Fact>& facts,
                                                                 std::size_t i,
                                                                 const std::string& lang, int k,
                                                                 std::uint64_t seed) {
  return unrelated_facts(probe, facts.at(i), facts, lang, k, seed);
}

/// Suppress (×0) and enhance (×2) effects of `set` on the encoded fact f (facts[i] in `lang`)
/// with every control of docs/METHOD.md §10: K unrelated facts, a random set of the same layer
/// histogram and one matched on activation magnitude. A control that cannot be formed leaves its
/// field empty and says why in `notes`; the related effect is always measured.
template <ProbeableModel M>
std::pair<EffectSet, EffectSet> measure_set(const KnowledgeProbe<M>& probe,
                                            const std::vector<Fact>& facts, std::size_t i,
                                            const std::string& lang, const EncodedFact& f,
                                            const NeuronSet& set, const LocalizeOptions& o,
                                            double* p_answer = nullptr) {
  static constexpr double factors[] = {0.0, 2.0};
  EffectSet sup, enh;
  auto note = [&](const std::string& why) {
    sup.notes.push_back(why);
    enh.notes.push_back(why);
  };
  // The random and magnitude controls depend on (seed, fact id, language) only: the same in
  // localize and run, in any shard, whatever the fact's position in the list. The unrelated facts
  // also depend on the list they are drawn from (o.unrelated_pool, else `facts`).
  const std::uint64_t cs = o.seed ^ fnv1a(facts[i].id + '\x1f' + lang +
                                          "\x1f"
                                          "control");
  std::optional<NeuronSet> ctl, ctl_mag;
  try {
    ctl = probe.random_control(set, cs);
  } catch (const Error& e) {
    note(std::string("control: ") + e.what());
  }
  try {
    ctl_mag = probe.magnitude_control(set, f, cs, o.control_band);
  } catch (const Error& e) {
    note(std::string("control_magnitude: ") + e.what());
  }
  std::vector<std::pair<std::string, EncodedFact>> us;
  if (o.unrelated > 0) {
    try {
      us = unrelated_facts(probe, facts[i], o.unrelated_pool ? *o.unrelated_pool : facts, lang,
                           o.unrelated, o.seed);
    } catch (const Error& e) {
      note(std::string("unrelated: ") + e.what());
    }
  }
  // Every measurement of the set and its controls as one batched call.
  using Request = typename KnowledgeProbe<M>::EffectRequest;
  std::vector<Request> reqs{{&f, &set}};
  if (ctl) reqs.push_back({&f, &*ctl});
  if (ctl_mag) reqs.push_back({&f, &*ctl_mag});
  const std::size_t first_unrelated = reqs.size();
  for (const auto& u : us) reqs.push_back({&u.second, &set});
  std::vector<std::vector<Effect>> eff;
  std::vector<std::string> failed(reqs.size());  // why a measurement could not be made
  try {
    eff = probe.effects(std::span<const Request>(reqs), factors);
  } catch (const Error&) {  // find the failing measurement: one call each (the set's own throws)
    eff.resize(reqs.size());
    eff[0] = probe.effects(std::span<const Request>(reqs.data(), 1), factors)[0];
    for (std::size_t k = 1; k < reqs.size(); ++k) try {
        eff[k] = probe.effects(std::span<const Request>(reqs.data() + k, 1), factors)[0];
      } catch (const Error& e) {
        failed[k] = e.what();
      }
  }
  const auto& rel = eff[0];
  for (const auto& e : rel) e.require_finite();
  if (p_answer) *p_answer = rel[0].before;
  sup.related = rel[0].relative();
  enh.related = rel[1].relative();
  std::size_t k = 1;
  auto control = [&](const char* name, std::optional<double>& s, std::optional<double>& e) {
    try {
      if (!failed[k].empty()) throw Error(failed[k]);
      s = eff[k][0].relative();
      e = eff[k][1].relative();
    } catch (const Error& err) {
      note(std::string(name) + ": " + err.what());
    }
    ++k;
  };
  if (ctl) control("control", sup.control, enh.control);
  if (ctl_mag) control("control_magnitude", sup.control_magnitude, enh.control_magnitude);
  if (!us.empty()) {
    double s = 0, sa = 0, e = 0, ea = 0;
    std::size_t used = 0;
    for (std::size_t u = 0; u < us.size(); ++u) {
      const std::string& id = us[u].first;
      if (!failed[first_unrelated + u].empty()) {
        note("unrelated fact " + id + " left out: " + failed[first_unrelated + u]);
        continue;
      }
      try {
        const auto& eu_ = eff[first_unrelated + u];
        const double su = eu_[0].relative(), eu = eu_[1].relative();
        s += su, sa += std::abs(su), e += eu, ea += std::abs(eu);
        ++used;
        sup.unrelated_facts.push_back(id);
        enh.unrelated_facts.push_back(id);
      } catch (const NumericError& err) {  // P = 0 on that fact: left out, named
        note("unrelated fact " + id + " left out: " + err.what());
      }
    }
    if (used > 0) {
      const double n = static_cast<double>(used);
      sup.unrelated = s / n, sup.unrelated_abs = sa / n;
      enh.unrelated = e / n, enh.unrelated_abs = ea / n;
    }
  }
  return {sup, enh};
}

}  // namespace detail

/// One (fact, language) of the localization experiment: encode facts[i] in `lang`, attribute,
/// select with the language's threshold and, when o.verify, measure the relative change of
/// P(answer) on suppressing (×0) / enhancing (×2) the set with every control of docs/METHOD.md §10
/// (detail::measure_set: the fact itself, K unrelated facts of other relations, random and
/// |activation|-matched control sets). Draws are seeded by (o.seed, fact id, language), so a
/// sharded or resumed run gives the same numbers. Throws Error when the fact cannot be processed.
template <ProbeableModel M>
LanguageResult localize_language(const KnowledgeProbe<M>& probe, const std::vector<Fact>& facts,
                                 std::size_t i, const std::string& lang, const LocalizeOptions& o) {
  const Fact& fact = facts.at(i);
  KNPROBE_REQUIRE(fact.prompts.count(lang) && fact.answers.count(lang), ArgumentError,
                  "no prompt or answer in this language");
  KNPROBE_REQUIRE(o.thresholds.count(lang), ArgumentError, "no threshold for language '", lang,
                  "'");
  LanguageResult r;
  r.language = lang;
  r.prompt = fact.prompts.at(lang);
  r.answer = fact.answers.at(lang);
  const EncodedFact f = probe.encode(r.prompt, r.answer);
  r.answer_ids = f.targets;
  r.top1 = detail::answers_top1(probe.model(), f);
  r.attribution = probe.attribute(f, o.attribution);
  r.selection = probe.select(r.attribution, o.thresholds.at(lang));
  if (o.verify)
    std::tie(r.suppress, r.enhance) =
        detail::measure_set(probe, facts, i, lang, f, r.selection.neurons, o, &r.p_answer);
  else
    r.p_answer = detail::answer_probability(probe.model(), f);
  return r;
}

/// The effects of suppressing (×0) and enhancing (×2) `set` (the fact's LIKN) in each language of
/// `languages`, with the same controls as a per-language set: {suppress, enhance} by language.
template <ProbeableModel M>
std::pair<std::map<std::string, EffectSet>, std::map<std::string, EffectSet>> set_effects(
    const KnowledgeProbe<M>& probe, const std::vector<Fact>& facts, std::size_t i,
    const NeuronSet& set, const LocalizeOptions& o) {
  std::map<std::string, EffectSet> sup, enh;
  const Fact& fact = facts.at(i);
  for (const auto& lang : o.languages) {
    const EncodedFact f = probe.encode(fact.prompts.at(lang), fact.answers.at(lang));
    std::tie(sup[lang], enh[lang]) = detail::measure_set(probe, facts, i, lang, f, set, o);
  }
  return {sup, enh};
}

namespace detail {

/// Dai's refinement, the rule itself: given the selected sets of one language, each with its
/// fact's relation, the neurons of each set that are selected for more than `fraction` of the
/// facts of other relations (empty when there is no other relation).
inline std::vector<NeuronSet> generic_neurons(
    const std::vector<std::pair<std::string, const NeuronSet*>>& sets, double fraction) {
  std::map<Neuron, std::map<std::string, std::size_t>> count;  // neuron → relation → facts
  std::map<std::string, std::size_t> facts_of;                 // relation → facts
  for (const auto& [rel, s] : sets) {
    ++facts_of[rel];
    for (const auto& n : *s) ++count[n][rel];
  }
  std::vector<NeuronSet> out;
  for (const auto& [rel, s] : sets) {
    std::size_t others = 0;
    for (const auto& [r, k] : facts_of) others += r == rel ? 0 : k;
    std::vector<Neuron> generic;
    if (others > 0)
      for (const auto& n : *s) {
        std::size_t in_others = 0;
        for (const auto& [r, k] : count[n]) in_others += r == rel ? 0 : k;
        if (static_cast<double>(in_others) > fraction * static_cast<double>(others))
          generic.push_back(n);
      }
    out.push_back(NeuronSet(std::move(generic)));
  }
  return out;
}

/// Dai's refinement (LocalizeOptions::generic_fraction): in each language, drop from every fact's
/// selection the neurons selected for more than `fraction` of the facts of other relations.
inline void drop_generic_neurons(std::vector<FactResult>& facts, double fraction) {
  std::map<std::string, std::vector<std::pair<std::string, const NeuronSet*>>> sets;  // by lang
  std::map<std::string, std::vector<LanguageResult*>> results;
  for (auto& f : facts)
    for (auto& [lang, r] : f.languages) {
      sets[lang].push_back({f.relation, &r.selection.neurons});
      results[lang].push_back(&r);
    }
  for (auto& [lang, rs] : results) {
    const auto generic = generic_neurons(sets.at(lang), fraction);
    for (std::size_t i = 0; i < rs.size(); ++i) {
      auto& r = *rs[i];
      std::vector<std::pair<Neuron, double>> kept;
      for (const auto& [n, score] : r.selection.ranked) {
        if (generic[i].contains(n))
          r.dropped_generic.push_back(n);
        else
          kept.push_back({n, score});
      }
      std::vector<Neuron> ns;
      for (const auto& [n, _] : kept) ns.push_back(n);
      r.selection.ranked = std::move(kept);
      r.selection.neurons = NeuronSet(std::move(ns));
    }
  }
}

}  // namespace detail

/// The localization experiment over `facts` (see localize_language): every (fact, language) is
/// attributed and selected first; then, with o.generic_fraction > 0, generic neurons are dropped
/// (detail::drop_generic_neurons); then the sets are verified and LIKN formed.
template <ProbeableModel M>
LocalizeReport localize(const KnowledgeProbe<M>& probe, const std::vector<Fact>& facts,
                        const LocalizeOptions& o) {
  KNPROBE_REQUIRE(!facts.empty(), ArgumentError, "localize: no facts");
  KNPROBE_REQUIRE(!o.languages.empty(), ArgumentError, "localize: no languages");
  for (const auto& lang : o.languages)
    KNPROBE_REQUIRE(o.thresholds.count(lang), ArgumentError,
                    "localize: no threshold for language '", lang, "'");
  KNPROBE_REQUIRE(o.generic_fraction >= 0 && o.generic_fraction < 1, ArgumentError,
                  "localize: generic fraction ", o.generic_fraction, " must be in [0, 1)");
  LocalizeReport rep;
  rep.bootstrap = o.bootstrap;
  LocalizeOptions select_only = o;
  select_only.verify = false;
  std::vector<std::size_t> index;  // rep.facts[k] is facts[index[k]]
  for (std::size_t i = 0; i < facts.size(); ++i) {
    const Fact& fact = facts[i];
    FactResult fr{fact.id, fact.relation, {}, {}, false, {}, {}};
    for (const auto& lang : o.languages) {
      if (o.progress) o.progress(fact.id + " [" + lang + "]");
      if (!fact.prompts.count(lang) || !fact.answers.count(lang)) {
        rep.skipped.push_back({fact.id, lang, "no prompt or answer in this language"});
        continue;
      }
      try {
        fr.languages.emplace(lang, localize_language(probe, facts, i, lang, select_only));
      } catch (const Error& e) {
        rep.skipped.push_back({fact.id, lang, e.what()});
      }
    }
    if (!fr.languages.empty()) {
      rep.facts.push_back(std::move(fr));
      index.push_back(i);
    }
  }
  if (o.generic_fraction > 0) detail::drop_generic_neurons(rep.facts, o.generic_fraction);
  for (std::size_t k = 0; k < rep.facts.size(); ++k) {
    auto& fr = rep.facts[k];
    const std::size_t i = index[k];
    if (o.verify)
      for (auto it = fr.languages.begin(); it != fr.languages.end();) {
        auto& r = it->second;
        try {
          const EncodedFact f = probe.encode(r.prompt, r.answer);
          std::tie(r.suppress, r.enhance) = detail::measure_set(
              probe, facts, i, r.language, f, r.selection.neurons, o, &r.p_answer);
          ++it;
        } catch (const Error& e) {
          rep.skipped.push_back({fr.id, r.language, e.what()});
          it = fr.languages.erase(it);
        }
      }
    if (fr.languages.size() == o.languages.size() && o.languages.size() > 1) {
      std::vector<NeuronSet> sets;
      for (const auto& [lang, r] : fr.languages) sets.push_back(r.selection.neurons);
      fr.likn = likn(sets);
      fr.likn_formed = true;
      if (o.verify && !fr.likn.empty()) {
        try {
          std::tie(fr.likn_suppress, fr.likn_enhance) = set_effects(probe, facts, i, fr.likn, o);
        } catch (const Error& e) {
          rep.skipped.push_back({fr.id, "LIKN", e.what()});
        }
      }
    }
  }
  std::erase_if(rep.facts, [](const FactResult& f) { return f.languages.empty(); });
  return rep;
}

/// Which facts a run keeps (docs/METHOD.md §10 "Screening"): the model must know the answer in
/// every language, by one stated rule.
struct ScreenRule {
  enum class Kind {
    top1,        ///< every answer token is the model's argmax (teacher-forced)
    rank,        ///< every answer token is within the model's top `max_rank`
    probability  ///< P(answer | prompt), product over its tokens, ≥ `min_probability`
  };
  Kind kind = Kind::top1;
  int max_rank = 1;
  double min_probability = 0;
  int max_answer_tokens = 0;  ///< longer answers are screened out (0 = any length)
  /// "top1", "rank<=5", "p>=0.01" (recorded in outputs).
  std::string describe() const {
    switch (kind) {
      case Kind::top1:
        return "top1";
      case Kind::rank:
        return "rank<=" + std::to_string(max_rank);
      case Kind::probability: {
        char b[48];
        std::snprintf(b, sizeof b, "p>=%g", min_probability);
        return b;
      }
    }
    return "?";
  }
};

namespace detail {

/// The rank (1 = argmax) of every answer token at its position (teacher-forced), from one forward
/// pass; nullopt when the model exposes no logits.
template <class M>
std::optional<std::vector<int>> answer_ranks(const M& m, const EncodedFact& f) {
  if constexpr (HasLogits<M>) {
    const auto z = answer_logits(m, f);  // row t: the logits at answer token t's position
    std::vector<int> ranks;
    for (std::size_t t = 0; t < f.targets.size(); ++t) {
      const auto row = z.row(Index(t));
      const auto target = row(f.targets[t]);
      int above = 0;
      for (Index v = 0; v < row.size(); ++v) above += row(v) > target;
      ranks.push_back(above + 1);
    }
    return ranks;
  } else {
    return std::nullopt;
  }
}

}  // namespace detail

/// Why fact f does not pass `rule` in `lang` ("" when it passes). A model without logits passes
/// the rank rules (nothing to rank); the probability rule works on every model.
template <ProbeableModel M>
std::string screen_reason(const KnowledgeProbe<M>& probe, const Fact& f, const std::string& lang,
                          const ScreenRule& rule) {
  if (!f.prompts.count(lang) || !f.answers.count(lang))
    return "no prompt or answer in this language";
  try {
    const EncodedFact e = probe.encode(f.prompts.at(lang), f.answers.at(lang));
    if (rule.max_answer_tokens > 0 && static_cast<int>(e.targets.size()) > rule.max_answer_tokens)
      return "answer has " + std::to_string(e.targets.size()) + " tokens (> " +
             std::to_string(rule.max_answer_tokens) + ")";
    if (rule.kind == ScreenRule::Kind::probability) {
      const double p = detail::answer_probability(probe.model(), e);
      if (!(p >= rule.min_probability)) {
        char b[96];
        std::snprintf(b, sizeof b, "P(answer) = %.3g < %g", p, rule.min_probability);
        return b;
      }
      return {};
    }
    const int k = rule.kind == ScreenRule::Kind::top1 ? 1 : rule.max_rank;
    if (const auto ranks = detail::answer_ranks(probe.model(), e))
      for (const int r : *ranks)
        if (r > k)
          return k == 1 ? "the model does not answer it (answer not top-1)"
                        : "an answer token has rank " + std::to_string(r) + " (> " +
                              std::to_string(k) + ")";
    return {};
  } catch (const Error& e) {
    return e.what();
  }
}

struct AnswerableOptions {
  std::vector<std::string> languages{"en", "zh"};
  ScreenRule rule;
  int max_answer_tokens = 0;  ///< 0 = any length (also read from rule.max_answer_tokens)
  std::size_t limit = 0;      ///< stop after this many kept facts (0 = scan all)
  /// Balance (0 = no cap): at most this many kept facts per relation, and per (relation, answer
  /// in the first language). With a cap the facts are visited round-robin over relations (each
  /// relation's facts in their order), so --limit takes from every relation alike.
  std::size_t per_relation = 0, per_answer = 0;
  std::function<void(std::size_t scanned, std::size_t kept)> progress;
  /// Screening verdicts already known, by screening_key(fact, languages): {language, reason}
  /// ("" = passes in every language), e.g. read back from an interrupted scan of the same model
  /// and rule. A fact found here is not screened again; the balance caps are recounted as the
  /// scan goes.
  std::map<std::string, std::pair<std::string, std::string>> known;
  /// Called with each new verdict (screening key, language, reason) as soon as it is decided, so
  /// that an interrupted scan can resume from `known`.
  std::function<void(const std::string&, const std::string&, const std::string&)> on_verdict;
};

/// What a screening verdict depends on besides the model and the rule: the fact's id and its
/// prompt and answer in each language (a changed text is screened again).
inline std::string screening_key(const Fact& f, const std::vector<std::string>& languages) {
  std::string k = f.id;
  for (const auto& l : languages) {
    k += '\x1f' + l + '\x1f';
    if (f.prompts.count(l)) k += f.prompts.at(l);
    k += '\x1f';
    if (f.answers.count(l)) k += f.answers.at(l);
  }
  return k;
}

/// `facts` interleaved round-robin over their relations (relations in order of first
/// appearance, each relation's facts in their order).
inline std::vector<Fact> round_robin_by_relation(const std::vector<Fact>& facts) {
  std::vector<std::string> order;
  std::map<std::string, std::vector<const Fact*>> by;
  for (const auto& f : facts) {
    if (!by.count(f.relation)) order.push_back(f.relation);
    by[f.relation].push_back(&f);
  }
  std::vector<Fact> out;
  for (std::size_t k = 0; out.size() < facts.size(); ++k)
    for (const auto& r : order)
      if (k < by[r].size()) out.push_back(*by[r][k]);
  return out;
}

/// The facts that pass `o.rule` in every language of `o`, within the balance caps and the limit.
/// The others are appended to `skipped` with the first reason found (a cap is a reason too).
template <ProbeableModel M>
std::vector<Fact> answerable_facts(const KnowledgeProbe<M>& probe, const std::vector<Fact>& facts,
                                   const AnswerableOptions& o, std::vector<SkippedFact>& skipped) {
  KNPROBE_REQUIRE(!o.languages.empty(), ArgumentError, "answerable_facts: no languages");
  ScreenRule rule = o.rule;
  if (o.max_answer_tokens > 0) rule.max_answer_tokens = o.max_answer_tokens;
  const bool balance = o.per_relation > 0 || o.per_answer > 0;
  const std::vector<Fact> visit = balance ? round_robin_by_relation(facts) : facts;
  std::map<std::string, std::size_t> per_relation, per_answer;
  std::vector<Fact> kept;
  std::size_t scanned = 0;
  for (const auto& fact : visit) {
    if (o.limit && kept.size() >= o.limit) break;
    ++scanned;
    std::string why, where;
    const std::string first = o.languages.front();
    const std::string answer_key =
        fact.relation + '\x1f' + (fact.answers.count(first) ? fact.answers.at(first) : "");
    if (o.per_relation && per_relation[fact.relation] >= o.per_relation) {
      why = "balance: relation " + fact.relation + " has " + std::to_string(o.per_relation) +
            " kept facts";
    } else if (o.per_answer && per_answer[answer_key] >= o.per_answer) {
      why = "balance: answer '" + fact.answers.at(first) + "' of relation " + fact.relation +
            " has " + std::to_string(o.per_answer) + " kept facts";
    } else if (const auto k = o.known.find(screening_key(fact, o.languages)); k != o.known.end()) {
      std::tie(where, why) = k->second;
    } else {
      for (const auto& lang : o.languages) {
        where = lang;
        why = screen_reason(probe, fact, lang, rule);
        if (!why.empty()) break;
      }
      if (o.on_verdict) o.on_verdict(screening_key(fact, o.languages), where, why);
    }
    if (why.empty()) {
      ++per_relation[fact.relation];
      ++per_answer[answer_key];
      kept.push_back(fact);
    } else {
      skipped.push_back({fact.id, where, why});
    }
    if (o.progress) o.progress(scanned, kept.size());
  }
  return kept;
}

namespace detail {

inline nlohmann::json neurons_json(const NeuronSet& s) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& n : s) j.push_back({n.layer, n.unit});
  return j;
}

}  // namespace detail

/// Per language: for every per-fact quantity (neuron count, completeness error, top-1, and each
/// suppress / enhance effect of the selected set and of LIKN, with their controls) its mean,
/// median and mean |x| with bootstrap 95 % intervals over facts (statistics.hpp); Succ from the
/// mean effects with its interval and an "unstable" flag when a denominator's interval contains 0
/// (Succ divides by small signed numbers: read it next to the signed and absolute means).
inline nlohmann::json summarize(const LocalizeReport& rep, const BootstrapOptions& b = {}) {
  std::map<std::string, std::map<std::string, std::vector<double>>> acc;
  // Pairs (related, unrelated) per fact for the Succ ratios.
  std::map<std::string, std::map<std::string, std::pair<std::vector<double>, std::vector<double>>>>
      ratio;
  std::vector<double> likn_sizes;
  auto add_effects = [&](const std::string& lang, const std::string& prefix, const char* name,
                         const EffectSet& e) {
    auto& a = acc[lang];
    for (const auto& [k, v] : e.fields())
      if (*v) a[prefix + name + "_" + k].push_back(**v);
    if (e.related && e.unrelated) {
      auto& [x, y] = ratio[lang][prefix + name];
      x.push_back(*e.related);
      y.push_back(*e.unrelated);
    }
  };
  for (const auto& f : rep.facts) {
    for (const auto& [lang, r] : f.languages) {
      auto& a = acc[lang];
      a["neurons"].push_back(static_cast<double>(r.selection.neurons.size()));
      a["max_completeness_delta"].push_back(r.attribution.max_delta());
      if (r.top1) a["top1"].push_back(*r.top1 ? 1.0 : 0.0);
      add_effects(lang, "", "suppress", r.suppress);
      add_effects(lang, "", "enhance", r.enhance);
    }
    for (const auto& [lang, e] : f.likn_suppress) add_effects(lang, "likn_", "suppress", e);
    for (const auto& [lang, e] : f.likn_enhance) add_effects(lang, "likn_", "enhance", e);
    if (f.likn_formed) likn_sizes.push_back(static_cast<double>(f.likn.size()));
  }
  nlohmann::json j;
  j["bootstrap"] = {{"resamples", b.resamples}, {"level", b.level}, {"seed", b.seed}};
  for (const auto& [lang, a] : acc) {
    auto& out = j["languages"][lang];
    out["facts"] = a.count("neurons") ? a.at("neurons").size() : 0;
    for (const auto& [k, v] : a) out[k] = to_json(summarize(v, b, lang + "/" + k));
    // Succ = |E_rel / E_unrel| + |S_rel / S_unrel| over the mean effects (docs/METHOD.md §8).
    const auto& rs = ratio[lang];
    if (rs.count("suppress") && rs.count("enhance") &&
        rs.at("suppress").first.size() == rs.at("enhance").first.size()) {
      const auto s =
          ratio_of_means(rs.at("suppress").first, rs.at("suppress").second, b, lang + "/succ_s");
      const auto e =
          ratio_of_means(rs.at("enhance").first, rs.at("enhance").second, b, lang + "/succ_e");
      const auto sc =
          succ_summary(rs.at("suppress").first, rs.at("suppress").second, rs.at("enhance").first,
                       rs.at("enhance").second, b, lang + "/succ");
      nlohmann::json succ = to_json(sc);  // {"n", "ratio": Succ, "ci", "unstable"}
      succ["value"] = succ["ratio"];
      succ.erase("ratio");
      succ["suppress_ratio"] = to_json(s);
      succ["enhance_ratio"] = to_json(e);
      out["succ"] = succ;
    }
  }
  // Generic neurons (docs/METHOD.md §10): how often each neuron recurs across facts and relations.
  std::map<std::string, std::map<Neuron, std::pair<std::size_t, std::set<std::string>>>> rec;
  std::map<std::string, std::size_t> n_facts;
  for (const auto& f : rep.facts)
    for (const auto& [lang, r] : f.languages) {
      ++n_facts[lang];
      for (const auto& n : r.selection.neurons) {
        auto& [count, rels] = rec[lang][n];
        ++count;
        rels.insert(f.relation);
      }
    }
  for (const auto& [lang, by] : rec) {
    std::vector<std::tuple<std::size_t, std::size_t, Neuron>> v;
    for (const auto& [n, cr] : by) v.push_back({cr.first, cr.second.size(), n});
    std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
      return std::get<0>(a) != std::get<0>(b) ? std::get<0>(a) > std::get<0>(b)
                                              : std::get<2>(a) < std::get<2>(b);
    });
    const double nf = static_cast<double>(n_facts[lang]);
    auto& out = j["languages"][lang]["recurrence"];
    out["facts"] = n_facts[lang];
    std::size_t over_10 = 0;
    for (const auto& [c, r, n] : v) over_10 += static_cast<double>(c) > 0.1 * nf;
    out["neurons_in_over_10pct_of_facts"] = over_10;
    out["top"] = nlohmann::json::array();
    for (std::size_t k = 0; k < std::min<std::size_t>(10, v.size()); ++k) {
      const auto& [c, r, n] = v[k];
      out["top"].push_back({{"layer", n.layer},
                            {"unit", n.unit},
                            {"facts", c},
                            {"relations", r},
                            {"share_of_facts", static_cast<double>(c) / nf}});
    }
    std::size_t dropped = 0;
    for (const auto& f : rep.facts)
      if (f.languages.count(lang)) dropped += f.languages.at(lang).dropped_generic.size();
    out["dropped_generic"] = dropped;
  }
  j["likn_size"] = to_json(summarize(likn_sizes, b, "likn_size"));
  std::size_t nonempty = 0;
  for (double x : likn_sizes) nonempty += x > 0;
  j["facts_with_likn"] = nonempty;
  j["facts_multilingual"] = likn_sizes.size();
  j["skipped"] = rep.skipped.size();
  return j;
}

// The JSON of a LanguageResult and of a whole LocalizeReport (localize.json) are written in
// experiments/run_records.hpp, next to the reader of the same records.

}  // namespace knprobe
