#pragma once
// Dataset-scale localization runs that survive being killed (docs/METHOD.md §3, §4, §5, §8 per
// fact), and Dai's refinement of a finished run against generic neurons (refine_run, §10). The work
// is a list of items — for every fact i of the shard (i mod shard_count = shard_rank), one item per
// language, then one LIKN item when there are several languages — and each finished item is one
// record appended to an io::ResultsFile (the record kinds, the header and their typed reading are
// in run_records.hpp). A rerun over the same file skips every item that already has a record
// (failures included: they are deterministic and reported, not retried). Results do not depend on
// the shard: the control seed and the unrelated fact come from the global index i.

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
#include "knprobe/experiments/run_records.hpp"
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

namespace detail {

/// Why fact f does not pass `rule` in some language of `languages` (screening), or "".
template <ProbeableModel M>
std::string screen_fact(const KnowledgeProbe<M>& probe, const Fact& f,
                        const std::vector<std::string>& languages, const ScreenRule& rule) {
  for (const auto& lang : languages)
    if (auto why = screen_reason(probe, f, lang, rule); !why.empty())
      return "[" + lang + "] " + why;
  return {};
}

/// The fields of fact i's LIKN record ("languages", "neurons", and "suppress" / "enhance" by
/// language, or "reason"): LIKN = ∩ of the sets in `have` (language → set) when every language of
/// the run has one, verified with every control as a per-language set.
template <ProbeableModel M>
nlohmann::json likn_fields(const KnowledgeProbe<M>& probe, const std::vector<Fact>& facts,
                           std::size_t i, const std::map<std::string, NeuronSet>& have,
                           const RunOptions& o) {
  const auto& langs = o.localize.languages;
  nlohmann::json rec{{"languages", langs}};
  if (have.size() != langs.size()) {
    rec["neurons"] = nlohmann::json::array();
    rec["reason"] = "not every language has a result";
    return rec;
  }
  std::vector<NeuronSet> v;
  for (const auto& lang : langs) v.push_back(have.at(lang));
  const NeuronSet l = likn(v);
  rec["neurons"] = neurons_json(l);
  if (o.localize.verify && !l.empty()) {
    try {
      const auto [sup, enh] = set_effects(probe, facts, i, l, o.localize);
      nlohmann::json eff = nlohmann::json::object();
      for (const auto& lang : langs) {
        eff["suppress"][lang] = effects_json(sup.at(lang));
        eff["enhance"][lang] = effects_json(enh.at(lang));
      }
      io::require_finite_json(eff, "fact " + facts[i].id + " [LIKN]");
      rec.update(eff);
    } catch (const Error& e) {
      rec["reason"] = e.what();
    }
  }
  return rec;
}

/// What a results file already holds, checked to be items of this run (parse_run_records): its
/// items (index, language; "" for LIKN) and the neuron set of each result, index → language → set.
struct ResumedItems {
  std::set<std::pair<long long, std::string>> done;
  std::map<long long, std::map<std::string, NeuronSet>> sets;
};
inline ResumedItems resumed_items(const io::ResultsFile& file, const std::vector<Fact>& facts) {
  ResumedItems out;
  for (const auto& r :
       parse_run_records(file.header(), file.records(), file.path().string(), &facts)) {
    out.done.insert(r.item());
    if (r.kind == RunRecordKind::result) out.sets[r.index][r.language] = r.neuron_set();
  }
  return out;
}

/// The fact indices of shard o.shard_rank of o.shard_count: i ≡ rank (mod count).
inline std::vector<std::size_t> shard_indices(std::size_t facts, const RunOptions& o) {
  std::vector<std::size_t> mine;
  for (std::size_t i = o.shard_rank; i < facts; i += o.shard_count) mine.push_back(i);
  return mine;
}

/// Checks every record of a results file (parse_run_records).
inline void validate_run_records(const io::ResultsContent& c, const std::string& path,
                                 const std::vector<Fact>* facts = nullptr) {
  (void)parse_run_records(c.header, c.records, path, facts);
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

  // (not a structured binding: the lambdas below capture them, which clang 14 refuses)
  detail::ResumedItems resumed = detail::resumed_items(file, facts);
  auto& done = resumed.done;
  auto& sets = resumed.sets;  // for LIKN items

  RunSummary s;
  const auto mine = detail::shard_indices(facts.size(), o);
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
    rec.update(detail::likn_fields(probe, facts, i, sets[idx], o));
    finish(std::move(rec));
  }
  return s;
}

/// What refine_run drops from each fact's set.
enum class RefineRule {
  generic,      ///< Dai's refinement: the generic neurons (detail::generic_neurons)
  random_drop,  ///< its control: as many neurons drawn at random from the non-generic ones
};

/// The header of the refined results of a finished run (refine_run): the run's header without
/// "shard", with options.drop_generic = `fraction` (and options.drop_rule = "random" for the
/// random-drop control), options.dkn = null (a DKN search is not carried over: its candidates were
/// the unrefined selection) and "refined_from": the count and fingerprint of the run's canonical
/// records, so that a refined file is resumed only against the same run.
inline nlohmann::json refined_run_header(nlohmann::json run_header,
                                         const std::vector<nlohmann::json>& run_records,
                                         double fraction, RefineRule rule = RefineRule::generic) {
  KNPROBE_REQUIRE(
      run_header.is_object() && run_header.contains("options") && run_header["options"].is_object(),
      FormatError, "refine: the run's header has no options");
  run_header.erase("shard");
  run_header.erase("record");
  run_header["options"]["drop_generic"] = fraction;
  if (rule == RefineRule::random_drop) run_header["options"]["drop_rule"] = "random";
  run_header["options"]["dkn"] = nullptr;
  std::uint64_t h = detail::fnv1a("knprobe-run-records");
  for (const auto& r : run_records) h = detail::fnv1a(r.dump() + '\n', h);
  char buf[32];
  std::snprintf(buf, sizeof buf, "fnv1a64:%016llx", static_cast<unsigned long long>(h));
  run_header["refined_from"] = {{"records", run_records.size()}, {"fingerprint", buf}};
  return run_header;
}

/// Dai's refinement of a finished run (docs/METHOD.md §10, the rule of detail::generic_neurons):
/// in each language, a neuron leaves fact f's set when more than `fraction` of the facts of other
/// relations select it; the reduced sets are verified again with every control and LIKN is formed
/// again from them — for the same facts and options, the sets and effects localize() gives with
/// LocalizeOptions::generic_fraction = `fraction` (the facts: those with a result in the run;
/// screened-out and failed items are not counted, as localize() does not see them). `run` is the
/// finished run (its canonical records with their header; every item must have a record: the counts
/// cover all facts). Each item of this shard becomes one record of `file` (header:
/// refined_run_header), resumable as in run_dataset: a result keeps its attribution fields
/// (completeness, top_by_layer, max_score), with "neurons" reduced, "dropped_generic" and new
/// effects, without "dkn"; a re-verification that fails becomes a failure record; screened-out and
/// failure records are copied. RefineRule::random_drop is the refinement's size-matched control:
/// from each set it drops as many neurons as the rule would, drawn uniformly from the set's
/// non-generic neurons (seeded by the run's seed, fact id and language; "dropped_random" lists
/// them) — so a comparison with the refinement tells what is specific to the generic neurons from
/// what any smaller set does. A set with fewer non-generic neurons than generic ones cannot be
/// matched: a failure record says so.
template <ProbeableModel M>
RunSummary refine_run(const KnowledgeProbe<M>& probe, const std::vector<Fact>& facts,
                      const io::ResultsContent& run, double fraction, io::ResultsFile& file,
                      const RunOptions& o, RefineRule rule = RefineRule::generic) {
  const auto& langs = o.localize.languages;
  KNPROBE_REQUIRE(fraction > 0 && fraction < 1, ArgumentError, "refine: generic fraction ",
                  fraction, " must be in (0, 1)");
  KNPROBE_REQUIRE(!facts.empty() && !langs.empty(), ArgumentError, "refine: no facts or languages");
  KNPROBE_REQUIRE(o.shard_count >= 1 && o.shard_rank < o.shard_count, ArgumentError,
                  "refine: shard ", o.shard_rank, " of ", o.shard_count, " does not exist");
  KNPROBE_REQUIRE(!run.header.contains("shard"), ArgumentError,
                  "refine: the run's results are one shard; merge the shards first");
  KNPROBE_REQUIRE(run.header.value("options", nlohmann::json::object())
                          .value("languages", std::vector<std::string>{}) == langs,
                  ArgumentError, "refine: the run's languages are not this refinement's");
  KNPROBE_REQUIRE(!run.header.contains("refined_from"), ArgumentError,
                  "refine: the run is itself a refinement; refine the original run");
  KNPROBE_REQUIRE(run.header.value("options", nlohmann::json::object()).value("verify", true) ==
                      o.localize.verify,
                  ArgumentError, "refine: the run was ",
                  o.localize.verify ? "not verified" : "verified",
                  "; refine it with the same verification");
  const bool multilingual = langs.size() > 1;
  const auto src = parse_run_records(run.header, run.records, "the run's results", &facts);
  std::map<std::pair<long long, std::string>, std::size_t> at;  // item → record
  for (std::size_t k = 0; k < src.size(); ++k) at[src[k].item()] = k;
  std::size_t missing = 0;
  for (std::size_t i = 0; i < facts.size(); ++i) {
    for (const auto& lang : langs) missing += !at.count({static_cast<long long>(i), lang});
    if (multilingual) missing += !at.count({static_cast<long long>(i), ""});
  }
  KNPROBE_REQUIRE(missing == 0, ArgumentError, "refine: the run is not finished (", missing,
                  " item(s) without a record); generic neurons are counted over all facts");

  // The generic neurons of every result, per language over all results of that language.
  std::vector<NeuronSet> own(src.size()), generic(src.size());
  std::map<std::string, std::vector<std::size_t>> of_lang;
  std::map<std::string, std::vector<std::pair<std::string, const NeuronSet*>>> sets_of;
  for (std::size_t k = 0; k < src.size(); ++k)
    if (src[k].kind == RunRecordKind::result) {
      own[k] = src[k].neuron_set();
      of_lang[src[k].language].push_back(k);
    }
  for (const auto& [lang, ks] : of_lang) {
    auto& v = sets_of[lang];
    for (const auto k : ks)
      v.push_back({facts[static_cast<std::size_t>(src[k].index)].relation, &own[k]});
    const auto g = detail::generic_neurons(v, fraction);
    for (std::size_t j = 0; j < ks.size(); ++j) generic[ks[j]] = g[j];
  }

  detail::ResumedItems resumed = detail::resumed_items(file, facts);
  auto& done = resumed.done;
  auto& refined = resumed.sets;  // for LIKN items
  RunSummary s;
  const auto mine = detail::shard_indices(facts.size(), o);
  s.items = mine.size() * (langs.size() + (multilingual ? 1 : 0));
  std::size_t progressed = 0;
  for (const std::size_t i : mine) {
    const Fact& fact = facts[i];
    const auto idx = static_cast<long long>(i);
    for (std::size_t n = 0; n <= langs.size(); ++n) {
      if (n == langs.size() && !multilingual) break;
      const std::string lang = n < langs.size() ? langs[n] : "";
      if (done.count({idx, lang})) {
        ++s.resumed;
        ++progressed;
        continue;
      }
      if (o.stop && o.stop->load()) {
        s.stopped = true;
        return s;
      }
      if (o.progress)
        o.progress(progressed, s.items, fact.id + " [" + (lang.empty() ? "LIKN" : lang) + "]");
      const std::size_t k = at.at({idx, lang});
      // (built key by key: the initializer-list assignment that was here leaked the replaced
      // value in the clang 14 ASan build of CI)
      auto item_record = [&](const char* kind, const std::string& l) {
        nlohmann::json r = nlohmann::json::object();
        r["record"] = kind;
        r["index"] = idx;
        r["fact"] = fact.id;
        r["relation"] = fact.relation;
        if (!l.empty()) r["language"] = l;
        return r;
      };
      nlohmann::json rec = run.records[k];
      if (lang.empty()) {
        rec = item_record("likn", "");
        rec.update(detail::likn_fields(probe, facts, i, refined[idx], o));
      } else if (src[k].kind == RunRecordKind::result) {
        // what leaves the set: its generic neurons, or (control) as many random non-generic ones
        NeuronSet drop = generic[k];
        std::string impossible;
        if (rule == RefineRule::random_drop) {
          std::vector<Neuron> pool;
          for (const auto& [x, score] : src[k].neurons)
            if (!generic[k].contains(x)) pool.push_back(x);
          const std::size_t n_drop = generic[k].size();
          if (pool.size() < n_drop) {
            impossible = "random-drop control impossible: " + std::to_string(n_drop) +
                         " generic neurons of " + std::to_string(src[k].neurons.size());
          } else {
            Rng rng(o.localize.seed ^ detail::fnv1a(fact.id + '\x1f' + lang + "\x1frandom-drop"));
            for (std::size_t j = 0; j < n_drop; ++j)
              std::swap(pool[j], pool[j + static_cast<std::size_t>(rng.below(pool.size() - j))]);
            pool.resize(n_drop);
            drop = NeuronSet(std::move(pool));
          }
        }
        nlohmann::json kept = nlohmann::json::array();
        std::vector<Neuron> keep, dropped;
        for (std::size_t j = 0; j < src[k].neurons.size(); ++j) {
          const Neuron x = src[k].neurons[j].first;
          (drop.contains(x) ? dropped : keep).push_back(x);
          if (!drop.contains(x)) kept.push_back(run.records[k]["neurons"][j]);
        }
        const NeuronSet set(std::move(keep));
        rec.erase("dkn");
        rec["neurons"] = kept;
        rec[rule == RefineRule::generic ? "dropped_generic" : "dropped_random"] =
            detail::neurons_json(NeuronSet(std::move(dropped)));
        try {
          if (!impossible.empty()) throw ArgumentError(impossible);
          if (o.localize.verify) {
            const EncodedFact f = probe.encode(fact.prompts.at(lang), fact.answers.at(lang));
            double p = 0;
            const auto [sup, enh] =
                detail::measure_set(probe, facts, i, lang, f, set, o.localize, &p);
            rec["p_answer"] = p;
            rec["suppress"] = detail::effects_json(sup);
            rec["enhance"] = detail::effects_json(enh);
            io::require_finite_json(rec, "fact " + fact.id + " [" + lang + "]");
          }
          refined[idx][lang] = set;
        } catch (const Error& e) {
          rec = item_record("failure", lang);
          rec["reason"] = e.what();
          ++s.failed;
        }
      }
      file.append(std::move(rec));
      ++s.computed;
      ++progressed;
    }
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
    const auto parsed = parse_run_records(p.header, p.records,
                                          "results part " + std::to_string(&p - &parts[0] + 1));
    for (std::size_t k = 0; k < p.records.size(); ++k) {
      const auto& r = p.records[k];
      const auto [idx, lang] = parsed[k].item();
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
