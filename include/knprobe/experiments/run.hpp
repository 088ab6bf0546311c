#pragma once
// Dataset-scale localization runs that survive being killed (METHOD.md §3, §4, §5, §8 per fact).
// The work is a list of items — for every fact i of the shard (i mod shard_count = shard_rank),
// one item per language, then one LIKN item when there are several languages — and each finished
// item is one record appended to an io::ResultsFile:
//   {"record": "result",       "index": i, "fact", "relation", "language",
//   ...to_json(LanguageResult),
//                              "dkn": {...} when DKN search is on}
//   {"record": "screened_out", "index": i, "fact", "relation", "language", "reason"}
//   {"record": "failure",      "index": i, "fact", "relation", "language", "reason"}
//   {"record": "likn",         "index": i, "fact", "relation", "languages", "neurons",
//                              "suppress": {lang: {"related"}}, "enhance": {...}}  (or "reason")
// A rerun over the same file skips every item that already has a record (failures included: they
// are deterministic and reported, not retried). Results do not depend on the shard: the control
// seed and the unrelated fact come from the global index i.

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "knprobe/core/rng.hpp"
#include "knprobe/experiments/degenerate.hpp"
#include "knprobe/experiments/localize.hpp"
#include "knprobe/io/results_file.hpp"

namespace knprobe {

struct RunOptions {
  LocalizeOptions localize;       ///< languages, thresholds, attribution, verify, seed
  bool require_correct = false;   ///< screen each fact: the model answers it (top-1) everywhere
  int max_answer_tokens = 0;      ///< with require_correct: longer answers are screened out
  std::optional<DknOptions> dkn;  ///< also search degenerate neurons of every (fact, language)
  int top_per_layer = 8;          ///< per-layer top units kept for heatmaps (0 = none)
  std::size_t shard_rank = 0, shard_count = 1;
  const std::atomic<bool>* stop = nullptr;  ///< when set, return before the next item
  /// Called before each item is computed: (items done, items in the shard, description).
  std::function<void(std::size_t, std::size_t, const std::string&)> progress;
};

struct RunSummary {
  std::size_t items = 0;     ///< work items of this shard
  std::size_t resumed = 0;   ///< items found already done in the file
  std::size_t computed = 0;  ///< items done by this call
  std::size_t failed = 0;    ///< failure records written by this call
  bool stopped = false;      ///< returned early because *stop was set
};

/// A fingerprint of a fact list (ids, relations, prompts and answers, in order): "fnv1a64:<hex>".
inline std::string facts_fingerprint(const std::vector<Fact>& facts) {
  std::uint64_t h = detail::fnv1a("knprobe-facts");
  for (const auto& f : facts) {
    h = detail::fnv1a(f.id + '\x1f' + f.relation + '\x1e', h);
    for (const auto* m : {&f.prompts, &f.answers})
      for (const auto& [lang, text] : *m) h = detail::fnv1a(lang + '\x1f' + text + '\x1e', h);
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "fnv1a64:%016llx", static_cast<unsigned long long>(h));
  return buf;
}

namespace detail {

/// The key of a record's work item: index and language ("" for the LIKN item).
inline std::pair<long long, std::string> run_item_key(const nlohmann::json& r) {
  return {r.value("index", -1LL), r.value("record", "") == "likn" ? "" : r.value("language", "")};
}

/// Why the model does not answer fact f in some language of `languages` (screening), or "".
template <ProbeableModel M>
std::string screen_fact(const KnowledgeProbe<M>& probe, const Fact& f,
                        const std::vector<std::string>& languages, int max_answer_tokens) {
  for (const auto& lang : languages) {
    if (!f.prompts.count(lang) || !f.answers.count(lang))
      return "[" + lang + "] no prompt or answer in this language";
    try {
      const EncodedFact e = probe.encode(f.prompts.at(lang), f.answers.at(lang));
      if (max_answer_tokens > 0 && static_cast<int>(e.targets.size()) > max_answer_tokens)
        return "[" + lang + "] answer has " + std::to_string(e.targets.size()) + " tokens (> " +
               std::to_string(max_answer_tokens) + ")";
      if (answers_top1(probe.model(), e) == false)
        return "[" + lang + "] the model does not answer it (answer not top-1)";
    } catch (const Error& e) {
      return "[" + lang + "] " + e.what();
    }
  }
  return {};
}

inline NeuronSet neurons_from_json(const nlohmann::json& a) {
  std::vector<Neuron> v;
  for (const auto& n : a)
    v.push_back(n.is_object() ? Neuron{n.at("layer").get<int>(), n.at("unit").get<int>()}
                              : Neuron{n.at(0).get<int>(), n.at(1).get<int>()});
  return NeuronSet(std::move(v));
}

}  // namespace detail

/// Runs (or resumes) the items of this shard that `file` does not hold yet, appending one record
/// per item as soon as it is done. Errors of one item become a failure record with the reason;
/// the run goes on.
template <ProbeableModel M>
RunSummary run_dataset(const KnowledgeProbe<M>& probe, const std::vector<Fact>& facts,
                       io::ResultsFile& file, const RunOptions& o) {
  const auto& langs = o.localize.languages;
  KNPROBE_REQUIRE(!facts.empty(), ArgumentError, "run: no facts");
  KNPROBE_REQUIRE(!langs.empty(), ArgumentError, "run: no languages");
  KNPROBE_REQUIRE(o.shard_count >= 1 && o.shard_rank < o.shard_count, ArgumentError, "run: shard ",
                  o.shard_rank, " of ", o.shard_count, " does not exist");
  KNPROBE_REQUIRE(o.top_per_layer >= 0, ArgumentError, "run: top_per_layer must be ≥ 0");
  for (const auto& lang : langs)
    KNPROBE_REQUIRE(o.localize.thresholds.count(lang), ArgumentError,
                    "run: no threshold for language '", lang, "'");
  const bool multilingual = langs.size() > 1;

  std::set<std::pair<long long, std::string>> done;
  std::map<long long, std::map<std::string, NeuronSet>> sets;  // for LIKN items
  for (const auto& r : file.records()) {
    done.insert(detail::run_item_key(r));
    if (r.value("record", "") == "result")
      sets[r.value("index", -1LL)][r.value("language", "")] =
          detail::neurons_from_json(r.at("neurons"));
  }

  RunSummary s;
  std::vector<std::size_t> mine;
  for (std::size_t i = o.shard_rank; i < facts.size(); i += o.shard_count) mine.push_back(i);
  s.items = mine.size() * (langs.size() + (multilingual ? 1 : 0));
  std::size_t progressed = 0;
  for (const std::size_t i : mine) {
    const Fact& fact = facts[i];
    const auto idx = static_cast<long long>(i);
    auto base = [&](const char* kind, const std::string& lang) {
      nlohmann::json r{
          {"record", kind}, {"index", idx}, {"fact", fact.id}, {"relation", fact.relation}};
      if (!lang.empty()) r["language"] = lang;
      return r;
    };
    // false: the item is in the file already (resumed) or the run must stop (s.stopped).
    auto start = [&](const std::string& key, const std::string& label) {
      if (done.count({idx, key})) {
        ++s.resumed;
        ++progressed;
        return false;
      }
      if (o.stop && o.stop->load()) {
        s.stopped = true;
        return false;
      }
      if (o.progress) o.progress(progressed, s.items, fact.id + " [" + label + "]");
      return true;
    };
    auto finish = [&](nlohmann::json rec) {
      file.append(std::move(rec));
      ++s.computed;
      ++progressed;
    };
    std::optional<std::string> screened;  // computed once per fact, when needed
    for (const auto& lang : langs) {
      if (!start(lang, lang)) {
        if (s.stopped) return s;
        continue;
      }
      nlohmann::json rec;
      if (o.require_correct && !screened)
        screened = detail::screen_fact(probe, fact, langs, o.max_answer_tokens);
      if (screened && !screened->empty()) {
        rec = base("screened_out", lang);
        rec["reason"] = *screened;
      } else {
        try {
          const LanguageResult r = localize_language(probe, facts, i, lang, o.localize);
          rec = base("result", lang);
          rec.update(to_json(r, o.top_per_layer));
          if (o.dkn)
            rec["dkn"] = detail::dkn_json(find_degenerate(
                probe.model(), probe.encode(r.prompt, r.answer), r.attribution, *o.dkn));
          sets[idx][lang] = r.selection.neurons;
        } catch (const Error& e) {
          rec = base("failure", lang);
          rec["reason"] = e.what();
          ++s.failed;
        }
      }
      finish(std::move(rec));
    }
    if (!multilingual) continue;
    if (!start("", "LIKN")) {
      if (s.stopped) return s;
      continue;
    }
    nlohmann::json rec = base("likn", "");
    rec["languages"] = langs;
    const auto& have = sets[idx];
    if (have.size() != langs.size()) {
      rec["neurons"] = nlohmann::json::array();
      rec["reason"] = "not every language has a result";
    } else {
      std::vector<NeuronSet> v;
      for (const auto& lang : langs) v.push_back(have.at(lang));
      const NeuronSet l = likn(v);
      rec["neurons"] = detail::neurons_json(l);
      if (o.localize.verify && !l.empty()) {
        try {
          const auto [sup, enh] = set_effects(probe, fact, l, langs);
          for (const auto& lang : langs) {
            rec["suppress"][lang] = detail::effects_json(sup.at(lang));
            rec["enhance"][lang] = detail::effects_json(enh.at(lang));
          }
        } catch (const Error& e) {
          rec["reason"] = e.what();
        }
      }
    }
    finish(std::move(rec));
  }
  return s;
}

/// The records of one or more results files of the same run (shards, or a resumed file) in the
/// canonical order — by fact index, then by the header's language order, the LIKN item last — with
/// one record per item. Throws FormatError when the shards' headers disagree (apart from "shard")
/// or two records claim the same item with different contents.
inline std::vector<nlohmann::json> canonical_records(const std::vector<io::ResultsContent>& parts) {
  KNPROBE_REQUIRE(!parts.empty(), ArgumentError, "no results to merge");
  auto identity = [](nlohmann::json h) {
    h.erase("shard");
    return h;
  };
  const auto h0 = identity(parts[0].header);
  std::map<std::string, std::size_t> lang_pos;
  for (const auto& l :
       h0.value("options", nlohmann::json::object()).value("languages", std::vector<std::string>{}))
    lang_pos.emplace(l, lang_pos.size());
  std::map<std::tuple<long long, std::size_t, std::string>, nlohmann::json> by_key;
  for (const auto& p : parts) {
    const auto d = io::detail::first_difference(identity(p.header), h0);
    KNPROBE_REQUIRE(d.empty(), FormatError, "results parts of different runs (", d, ")");
    for (const auto& r : p.records) {
      const auto [idx, lang] = detail::run_item_key(r);
      const std::size_t pos = lang.empty()           ? lang_pos.size() + 1
                              : lang_pos.count(lang) ? lang_pos.at(lang)
                                                     : lang_pos.size();
      const auto [it, fresh] = by_key.emplace(std::tuple{idx, pos, lang}, r);
      KNPROBE_REQUIRE(fresh || it->second == r, FormatError, "fact index ", idx, " [",
                      lang.empty() ? "LIKN" : lang, "] has two different records");
    }
  }
  std::vector<nlohmann::json> out;
  for (auto& [k, r] : by_key) out.push_back(std::move(r));
  return out;
}

}  // namespace knprobe
