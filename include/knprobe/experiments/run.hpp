#pragma once
// Dataset-scale localization runs that survive being killed (docs/METHOD.md §3, §4, §5, §8 per
// fact). The work is a list of items — for every fact i of the shard (i mod shard_count =
// shard_rank), one item per language, then one LIKN item when there are several languages — and
// each finished item is one record appended to an io::ResultsFile:
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

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <new>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "knprobe/core/rng.hpp"
#include "knprobe/experiments/degenerate.hpp"
#include "knprobe/experiments/localize.hpp"
#include "knprobe/io/json_get.hpp"
#include "knprobe/io/results_file.hpp"

namespace knprobe {

struct RunOptions {
  LocalizeOptions localize;      ///< languages, thresholds, attribution, verify, seed
  bool require_correct = false;  ///< screen each fact: it must pass `screen` in every language
  int max_answer_tokens = 0;     ///< with require_correct: longer answers are screened out
  ScreenRule screen;  ///< with require_correct: top-1 (default), top-k or P(answer) ≥ p
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

/// Why fact f does not pass `rule` in some language of `languages` (screening), or "".
template <ProbeableModel M>
std::string screen_fact(const KnowledgeProbe<M>& probe, const Fact& f,
                        const std::vector<std::string>& languages, const ScreenRule& rule) {
  for (const auto& lang : languages)
    if (auto why = screen_reason(probe, f, lang, rule); !why.empty())
      return "[" + lang + "] " + why;
  return {};
}

/// Checks one record of a knprobe-run/1 results file against the file's header (the work list:
/// fact count, shard, languages, model size) and, when given, the facts of this run. FormatError
/// "<where>: ..." naming what is wrong. Guards resuming, merging and reporting against foreign or
/// damaged lines: a record is accepted only if it describes an item of this run.
inline void validate_run_record(const nlohmann::json& r, const nlohmann::json& header,
                                const std::string& where,
                                const std::vector<Fact>* facts = nullptr) {
  auto fail = [&](const std::string& why) { throw FormatError(where + ": " + why); };
  if (!r.is_object()) fail("not a JSON object");
  const auto kind_it = r.find("record");
  if (kind_it == r.end() || !kind_it->is_string()) fail("no string 'record'");
  const std::string kind = kind_it->get<std::string>();
  if (kind != "result" && kind != "screened_out" && kind != "failure" && kind != "likn")
    fail("record kind '" + kind.substr(0, 40) +
         "' is not one of result, screened_out, failure, likn");
  const auto count = io::json_int<long long>(
      io::json_at(io::json_at(header, "facts", "header"), "count", "header facts"), 0, 1LL << 40,
      "header facts.count");
  if (count == 0) fail("the header lists no facts");
  const auto idx =
      io::json_int<long long>(io::json_at(r, "index", where), 0, count - 1, where + ": index");
  if (header.contains("shard")) {
    const auto rank = io::json_int<long long>(io::json_at(header["shard"], "rank", "shard"), 0,
                                              1 << 20, "header shard.rank");
    const auto n = io::json_int<long long>(io::json_at(header["shard"], "count", "shard"), 1,
                                           1 << 20, "header shard.count");
    if (idx % n != rank)
      fail("index " + std::to_string(idx) + " does not belong to shard " + std::to_string(rank) +
           " of " + std::to_string(n));
  }
  const auto& fact = io::json_string(io::json_at(r, "fact", where), where + ": fact");
  if (facts && fact != (*facts)[static_cast<std::size_t>(idx)].id)
    fail("index " + std::to_string(idx) + " is fact '" +
         (*facts)[static_cast<std::size_t>(idx)].id + "' in this run, not '" + fact.substr(0, 60) +
         "'");
  const auto& langs =
      io::json_at(io::json_at(header, "options", "header"), "languages", "header options");
  if (kind != "likn") {
    const auto& lang = io::json_string(io::json_at(r, "language", where), where + ": language");
    if (std::find(langs.begin(), langs.end(), nlohmann::json(lang)) == langs.end())
      fail("language '" + lang.substr(0, 20) + "' is not one of this run's languages");
  }
  if (kind == "screened_out" || kind == "failure")
    (void)io::json_string(io::json_at(r, "reason", where), where + ": reason");
  if (kind == "result" || kind == "likn") {
    const auto& model = io::json_at(header, "model", "header");
    const int layers = io::json_int<int>(io::json_at(model, "layers", "header model"), 1, 1 << 16,
                                         "header model.layers");
    const int width = io::json_int<int>(io::json_at(model, "ffn_width", "header model"), 1, 1 << 24,
                                        "header model.ffn_width");
    const auto& neurons = io::json_at(r, "neurons", where);
    if (!neurons.is_array()) fail("'neurons' is not an array");
    for (const auto& n : neurons) {
      const bool obj = n.is_object();
      if (!obj && !(n.is_array() && n.size() == 2)) fail("a neuron is not {layer, unit, score}");
      (void)io::json_int<int>(obj ? io::json_at(n, "layer", where) : n[0], 0, layers - 1,
                              where + ": neuron layer");
      (void)io::json_int<int>(obj ? io::json_at(n, "unit", where) : n[1], 0, width - 1,
                              where + ": neuron unit");
      if (obj && n.contains("score"))
        (void)io::json_number(n["score"], -1e300, 1e300, where + ": neuron score");
    }
    // Effects: {"related": x, "unrelated": y, ...} of finite numbers, with the ids of the
    // unrelated facts and notes on missing controls as arrays of strings (LIKN: by language).
    auto effects = [&](const nlohmann::json& e, const std::string& at) {
      if (!e.is_object()) fail("'" + at + "' is not an object");
      for (auto it = e.begin(); it != e.end(); ++it) {
        const std::string w = where + ": " + at + "." + it.key();
        if (it.key() == "unrelated_facts" || it.key() == "notes") {
          if (!it.value().is_array()) fail(at + "." + it.key() + " is not an array");
          for (const auto& s : it.value()) (void)io::json_string(s, w);
        } else {
          (void)io::json_number(it.value(), -1e300, 1e300, w);
        }
      }
    };
    for (const char* key : {"suppress", "enhance"}) {
      if (!r.contains(key)) continue;
      if (kind == "result") {
        effects(r[key], key);
      } else {
        if (!r[key].is_object()) fail(std::string("'") + key + "' is not an object");
        for (auto it = r[key].begin(); it != r[key].end(); ++it)
          effects(it.value(), std::string(key) + "." + it.key());
      }
    }
    if (kind == "result") {
      (void)io::json_number(io::json_at(r, "p_answer", where), 0.0, 1.0, where + ": p_answer");
      if (r.contains("max_completeness_delta"))
        (void)io::json_number(r["max_completeness_delta"], 0.0, 1e300,
                              where + ": max_completeness_delta");
      if (r.contains("dkn")) {
        const auto& d = r["dkn"];
        const auto& sets = io::json_at(d, "degenerate", where + ": dkn");
        if (!sets.is_array()) fail("dkn.degenerate is not an array");
        for (const auto& set : sets)
          if (!set.is_array()) fail("a dkn.degenerate entry is not an array");
        if (d.contains("forward_passes"))
          (void)io::json_int<long long>(d["forward_passes"], 0, 1LL << 50,
                                        where + ": dkn.forward_passes");
      }
      if (r.contains("top_by_layer")) {
        const auto& t = r["top_by_layer"];
        if (!t.is_array() || static_cast<int>(t.size()) != layers)
          fail("'top_by_layer' must hold one entry per layer (" + std::to_string(layers) + ")");
        for (const auto& row : t) {
          if (!row.is_array()) fail("a 'top_by_layer' row is not an array");
          for (const auto& c : row) {
            if (!c.is_array() || c.size() != 2) fail("a 'top_by_layer' entry is not [unit, score]");
            (void)io::json_int<int>(c[0], 0, width - 1, where + ": top_by_layer unit");
            (void)io::json_number(c[1], -1e300, 1e300, where + ": top_by_layer score");
          }
        }
      }
    }
  }
}

/// Checks every record of a results file (see validate_run_record); lines are numbered as in the
/// file (the header is line 1).
inline void validate_run_records(const io::ResultsContent& c, const std::string& path,
                                 const std::vector<Fact>* facts = nullptr) {
  KNPROBE_REQUIRE(
      c.header.is_object() && c.header.value("format", nlohmann::json()) == "knprobe-run/1",
      FormatError, path, ": not a knprobe run results file (header format is not ",
      "knprobe-run/1)");
  std::set<std::pair<long long, std::string>> seen;
  for (std::size_t i = 0; i < c.records.size(); ++i) {
    const std::string where = path + ":" + std::to_string(i + 2);
    validate_run_record(c.records[i], c.header, where, facts);
    const auto key = run_item_key(c.records[i]);
    KNPROBE_REQUIRE(seen.insert(key).second, FormatError, where, ": a second record of fact index ",
                    key.first, " [", key.second.empty() ? "LIKN" : key.second, "]");
  }
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

  {  // what a resumed file holds must be items of this run
    io::ResultsContent held{file.header(), file.records(), std::nullopt, 0};
    detail::validate_run_records(held, file.path().string(), &facts);
  }
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
        screened = detail::screen_fact(probe, fact, langs, [&] {
          ScreenRule r = o.screen;
          if (o.max_answer_tokens > 0) r.max_answer_tokens = o.max_answer_tokens;
          return r;
        }());
      if (screened && !screened->empty()) {
        rec = base("screened_out", lang);
        rec["reason"] = *screened;
      } else {
        try {
          const LanguageResult r = localize_language(probe, facts, i, lang, o.localize);
          rec = base("result", lang);
          rec.update(to_json(r, o.top_per_layer));
          if (o.dkn)
            rec["dkn"] =
                detail::dkn_json(find_degenerate(probe.model(), probe.encode(r.prompt, r.answer),
                                                 r.attribution, *o.dkn, &r.selection.ranked));
          // a NaN here would stop every rerun at this item: record it as this item's failure
          io::require_finite_json(rec, "fact " + fact.id + " [" + lang + "]");
          sets[idx][lang] = r.selection.neurons;
        } catch (const Error& e) {
          rec = base("failure", lang);
          rec["reason"] = e.what();
          ++s.failed;
        } catch (const std::bad_alloc&) {  // recorded, so that a rerun does not die here again
          rec = base("failure", lang);
          rec["reason"] = "out of memory";
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
          LocalizeOptions lo = o.localize;
          lo.languages = langs;
          const auto [sup, enh] = set_effects(probe, facts, i, l, lo);
          nlohmann::json eff = nlohmann::json::object();
          for (const auto& lang : langs) {
            eff["suppress"][lang] = detail::effects_json(sup.at(lang));
            eff["enhance"][lang] = detail::effects_json(enh.at(lang));
          }
          io::require_finite_json(eff, "fact " + fact.id + " [LIKN]");
          rec.update(eff);
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
  for (std::size_t i = 0; i < parts.size(); ++i)
    detail::validate_run_records(parts[i], "results part " + std::to_string(i + 1));
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
