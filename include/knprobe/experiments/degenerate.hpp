#pragma once
// The degenerate-knowledge-neuron experiment (docs/METHOD.md §5) over facts in several languages:
// per (fact, language) attribute, then search degenerate sets among the DKN candidates (by default
// the fact's selected knowledge neurons, strongest first; or the top-attributed units); summary per
// language: how many facts have degenerate sets, how many sets, their sizes and the forward passes
// spent. Facts that cannot be processed are recorded with the reason.

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "knprobe/experiments/localize.hpp"
#include "knprobe/probe/degenerate.hpp"

namespace knprobe {

struct DknExperimentOptions {
  std::vector<std::string> languages{"en", "zh"};
  std::map<std::string, double> thresholds{{"en", 0.3}, {"zh", 0.2}};  ///< selection t per language
  AttributionOptions attribution;
  DknOptions dkn;
  std::function<void(const std::string&)> progress;  ///< once per (fact, language)
};

struct DknFactResult {
  std::string fact, relation, language;
  DknResult dkn;
};

struct DknReport {
  std::vector<DknFactResult> results;
  std::vector<SkippedFact> skipped;
};

template <ProbeableModel M>
DknReport degenerate_neurons(const KnowledgeProbe<M>& probe, const std::vector<Fact>& facts,
                             const DknExperimentOptions& o) {
  KNPROBE_REQUIRE(!facts.empty(), ArgumentError, "degenerate_neurons: no facts");
  KNPROBE_REQUIRE(!o.languages.empty(), ArgumentError, "degenerate_neurons: no languages");
  DknReport rep;
  for (const auto& fact : facts)
    for (const auto& lang : o.languages) {
      if (o.progress) o.progress(fact.id + " [" + lang + "]");
      if (!fact.prompts.count(lang) || !fact.answers.count(lang)) {
        rep.skipped.push_back({fact.id, lang, "no prompt or answer in this language"});
        continue;
      }
      try {
        const EncodedFact f = probe.encode(fact.prompts.at(lang), fact.answers.at(lang));
        const auto a = probe.attribute(f, o.attribution);
        KNPROBE_REQUIRE(o.thresholds.count(lang), ArgumentError, "no threshold for language '",
                        lang, "'");
        const Selection sel = KnowledgeProbe<M>::select(a, o.thresholds.at(lang));
        rep.results.push_back({fact.id, fact.relation, lang,
                               find_degenerate(probe.model(), f, a, o.dkn, &sel.ranked)});
      } catch (const Error& e) {
        rep.skipped.push_back({fact.id, lang, e.what()});
      }
    }
  return rep;
}

namespace detail {

/// One search: {"p0", "degenerate": [[[layer, unit], ...], ...], "forward_passes", "truncated"}.
inline nlohmann::json dkn_json(const DknResult& d) {
  nlohmann::json sets = nlohmann::json::array();
  for (const auto& s : d.degenerate) sets.push_back(neurons_json(NeuronSet(s)));
  nlohmann::json cand = nlohmann::json::array();
  for (const auto& [n, score] : d.candidates) cand.push_back({n.layer, n.unit, score});
  nlohmann::json j{{"p0", d.p0},
                   {"candidates", cand},
                   {"degenerate", sets},
                   {"forward_passes", d.forward_passes},
                   {"truncated", d.truncated}};
  if (!d.note.empty()) j["note"] = d.note;
  return j;
}

}  // namespace detail

inline nlohmann::json to_json(const DknReport& rep) {
  nlohmann::json j;
  j["facts"] = nlohmann::json::array();
  struct Acc {
    std::size_t facts = 0, searched = 0, with_dkn = 0, sets = 0, neurons_in_sets = 0, passes = 0,
                truncated = 0;
    std::vector<double> sets_per_fact;
  };
  std::map<std::string, Acc> acc;
  for (const auto& r : rep.results) {
    auto jf = detail::dkn_json(r.dkn);
    jf.update({{"fact", r.fact}, {"relation", r.relation}, {"language", r.language}});
    j["facts"].push_back(std::move(jf));
    auto& a = acc[r.language];
    ++a.facts;
    if (!r.dkn.note.empty()) continue;  // fewer than 2 candidates: not searched, not "none found"
    ++a.searched;
    a.sets_per_fact.push_back(static_cast<double>(r.dkn.degenerate.size()));
    a.with_dkn += !r.dkn.degenerate.empty();
    a.sets += r.dkn.degenerate.size();
    for (const auto& s : r.dkn.degenerate) a.neurons_in_sets += s.size();
    a.passes += r.dkn.forward_passes;
    a.truncated += r.dkn.truncated;
  }
  for (const auto& [lang, a] : acc) {
    const double n = static_cast<double>(a.searched);
    auto ratio = [](double x, double y) {
      return y > 0 ? nlohmann::json(x / y) : nlohmann::json();
    };
    j["summary"][lang] = {
        {"facts", a.facts},
        {"facts_searched", a.searched},  // the others had fewer than 2 candidates
        {"facts_with_dkn", a.with_dkn},
        {"sets_per_fact", to_json(summarize(a.sets_per_fact, {}, lang + "/dkn_sets"))},
        {"mean_set_size",
         ratio(static_cast<double>(a.neurons_in_sets), static_cast<double>(a.sets))},
        {"mean_forward_passes", ratio(static_cast<double>(a.passes), n)},
        {"truncated_searches", a.truncated}};
  }
  j["skipped"] = nlohmann::json::array();
  for (const auto& s : rep.skipped)
    j["skipped"].push_back({{"fact", s.fact}, {"language", s.language}, {"reason", s.reason}});
  return j;
}

}  // namespace knprobe
