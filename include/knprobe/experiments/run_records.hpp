#pragma once
// The schema of knprobe-run/1 results files, in one place: the header that decides whether a file
// can be resumed (make_run_header; make_checkpoint_header for the experiments' checkpoints;
// require_run_header_matches when another command reuses a run), the writer of a result's fields
// (to_json(LanguageResult), also each language of localize.json, to_json(LocalizeReport)) and every
// record kind, written by run_dataset and read back — by resuming, merging shards and `knprobe
// report` — through parse_run_record into a typed RunRecord, so that no reader looks fields up by
// string literals of its own. Records:
//   {"record": "result",       "index": i, "fact", "relation", "language",
//    ...to_json(LanguageResult) (prompt, answer, p_answer, top1, neurons [{layer, unit, score}],
//    suppress / enhance {related, unrelated, unrelated_abs, control, control_magnitude,
//    unrelated_facts, notes}, max_completeness_delta, completeness, top_by_layer),
//    "dkn": {p0, candidates, degenerate [[[layer, unit], ...], ...], forward_passes, truncated,
//            note} when DKN search is on}
//   {"record": "screened_out", "index": i, "fact", "relation", "language", "reason"}
//   {"record": "failure",      "index": i, "fact", "relation", "language", "reason"}
//   {"record": "likn",         "index": i, "fact", "relation", "languages", "neurons" [[l, u]],
//    "suppress": {lang: effects}, "enhance": {lang: effects}}  (or "reason")

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "knprobe/core/error.hpp"
#include "knprobe/core/rng.hpp"
#include "knprobe/data/facts.hpp"
#include "knprobe/experiments/localize.hpp"
#include "knprobe/io/json_get.hpp"
#include "knprobe/model/concept.hpp"
#include "knprobe/probe/neuron_set.hpp"
#include "knprobe/version.hpp"

namespace knprobe {

// ---- Writers: a LanguageResult (a "result" record's fields, and each language of
// localize.json) and a whole LocalizeReport. Their reader is parse_run_record below.

namespace detail {

/// An EffectSet as {"related": x, "unrelated": y, ..., "unrelated_facts": [...], "notes": [...]}
/// (a measure that was not taken is absent).
inline nlohmann::json effects_json(const EffectSet& e) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : e.fields())
    if (*v) j[k] = **v;
  if (!e.unrelated_facts.empty()) j["unrelated_facts"] = e.unrelated_facts;
  if (!e.notes.empty()) j["notes"] = e.notes;
  return j;
}

/// The effect fields that are numbers, in the order tables show them.
inline constexpr const char* k_effect_fields[] = {"related", "unrelated", "unrelated_abs",
                                                  "control", "control_magnitude"};

}  // namespace detail

/// One language's result: prompt, answer, P(answer), the selected neurons with their scores,
/// effects and completeness; with `top_per_layer` > 0 also the `top_per_layer` highest-scoring
/// units of every layer ("top_by_layer": per layer [[unit, score], ...], for heatmaps).
inline nlohmann::json to_json(const LanguageResult& r, int top_per_layer = 0) {
  nlohmann::json sel = nlohmann::json::array();
  for (const auto& [n, s] : r.selection.ranked)
    sel.push_back({{"layer", n.layer}, {"unit", n.unit}, {"score", s}});
  nlohmann::json comp = nlohmann::json::array();
  for (const auto& c : r.attribution.completeness)
    comp.push_back({{"layer", c.layer},
                    {"token", c.token},
                    {"p_actual", c.p_actual},
                    {"p_baseline", c.p_baseline},
                    {"attribution_sum", c.attribution_sum},
                    {"delta", c.delta}});
  nlohmann::json j{{"prompt", r.prompt},
                   {"answer", r.answer},
                   {"answer_ids", r.answer_ids},
                   {"p_answer", r.p_answer},
                   {"top1", r.top1 ? nlohmann::json(*r.top1) : nlohmann::json(nullptr)},
                   {"max_score", r.selection.max_score},
                   {"neurons", sel},
                   {"suppress", detail::effects_json(r.suppress)},
                   {"enhance", detail::effects_json(r.enhance)},
                   {"max_completeness_delta", r.attribution.max_delta()},
                   {"dropped_generic", detail::neurons_json(NeuronSet(r.dropped_generic))},
                   {"completeness", comp}};
  if (top_per_layer > 0) {
    const auto& sc = r.attribution.scores;
    nlohmann::json layers = nlohmann::json::array();
    for (std::size_t l = 0; l < sc.shape(0); ++l) {
      std::vector<std::pair<double, std::size_t>> v;
      for (std::size_t u = 0; u < sc.shape(1); ++u) v.push_back({sc(l, u), u});
      const auto k = std::min<std::size_t>(static_cast<std::size_t>(top_per_layer), v.size());
      std::partial_sort(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end(),
                        [](const auto& a, const auto& b) {
                          return a.first != b.first ? a.first > b.first : a.second < b.second;
                        });
      nlohmann::json row = nlohmann::json::array();
      for (std::size_t t = 0; t < k; ++t) row.push_back({v[t].second, v[t].first});
      layers.push_back(row);
    }
    j["top_by_layer"] = layers;
  }
  return j;
}

/// The whole report as JSON (scores of the selected neurons only; full tensors go to .npy).
inline nlohmann::json to_json(const LocalizeReport& rep) {
  nlohmann::json j;
  j["facts"] = nlohmann::json::array();
  for (const auto& f : rep.facts) {
    nlohmann::json jf{
        {"id", f.id}, {"relation", f.relation}, {"likn", detail::neurons_json(f.likn)}};
    for (const auto& [lang, r] : f.languages) jf["languages"][lang] = to_json(r);
    for (const auto& [lang, e] : f.likn_suppress)
      jf["likn_effects"][lang]["suppress"] = detail::effects_json(e);
    for (const auto& [lang, e] : f.likn_enhance)
      jf["likn_effects"][lang]["enhance"] = detail::effects_json(e);
    j["facts"].push_back(jf);
  }
  j["skipped"] = nlohmann::json::array();
  for (const auto& s : rep.skipped)
    j["skipped"].push_back({{"fact", s.fact}, {"language", s.language}, {"reason", s.reason}});
  j["summary"] = summarize(rep, rep.bootstrap);
  return j;
}

// ---- Readers

enum class RunRecordKind { result, screened_out, failure, likn };

/// What `knprobe report` and resuming read of a result record's DKN search.
struct RunDkn {
  std::vector<std::vector<Neuron>> degenerate;  ///< the DKN sets found
  std::size_t forward_passes = 0;
  bool searched = true;  ///< false: fewer than 2 candidates (a "note"), not "no DKN found"
};

/// One record of a knprobe-run/1 file, checked against its header (parse_run_record).
struct RunRecord {
  RunRecordKind kind = RunRecordKind::result;
  long long index = 0;
  std::string fact, relation;
  std::string language;  ///< "" for a LIKN record
  std::string reason;    ///< screened_out / failure; a LIKN record that was not measured
  /// result: the selected neurons with their scores; likn: the LIKN set (scores 0).
  std::vector<std::pair<Neuron, double>> neurons;
  // result
  std::string prompt, answer;
  double p_answer = 0;
  std::optional<double> max_completeness_delta;
  EffectSet suppress, enhance;
  std::optional<RunDkn> dkn;
  std::vector<std::vector<std::pair<int, double>>> top_by_layer;  ///< per layer (unit, score)
  // likn, by language
  std::map<std::string, EffectSet> likn_suppress, likn_enhance;

  /// The work item: (index, language), language "" for the LIKN item.
  std::pair<long long, std::string> item() const { return {index, language}; }
  NeuronSet neuron_set() const {
    std::vector<Neuron> v;
    for (const auto& [n, s] : neurons) v.push_back(n);
    return NeuronSet(std::move(v));
  }
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

/// The header of a run's results file. Everything but "paths" is identity: a file is resumed
/// only by a run whose header equals it (io::ResultsFile names the first difference).
/// `options` are the run's parameters as the caller serialises them (method, m, thresholds,
/// controls, screening, DKN, ...); `paths` are informative.
template <class M>
nlohmann::json make_run_header(const M& model, const std::string& model_hash,
                               const std::vector<Fact>& facts, nlohmann::json options,
                               nlohmann::json paths) {
  return nlohmann::json{
      {"format", "knprobe-run/1"},
      {"knprobe_version", KNPROBE_VERSION_STRING},
      {"model",
       {{"objective", ArchTraits<M>::objective == Objective::masked_lm ? "masked_lm" : "causal_lm"},
        {"layers", model.num_layers()},
        {"ffn_width", model.ffn_width()},
        {"hash", model_hash}}},
      {"facts", {{"count", facts.size()}, {"fingerprint", facts_fingerprint(facts)}}},
      {"options", std::move(options)},
      {"paths", std::move(paths)}};
}

/// The header of an experiment's checkpoint (`knprobe edit` / `factcheck` write
/// "knprobe-editing-checkpoint/1" / "knprobe-factcheck-checkpoint/1"): like make_run_header,
/// everything but "paths" is identity, so a checkpoint is resumed only by the same version, model
/// (hash), fact list (fingerprint) and options.
inline nlohmann::json make_checkpoint_header(const std::string& format,
                                             const std::string& model_hash,
                                             const std::vector<Fact>& facts, nlohmann::json options,
                                             nlohmann::json paths) {
  return nlohmann::json{
      {"format", format},
      {"knprobe_version", KNPROBE_VERSION_STRING},
      {"model", {{"hash", model_hash}}},
      {"facts", {{"count", facts.size()}, {"fingerprint", facts_fingerprint(facts)}}},
      {"options", std::move(options)},
      {"paths", std::move(paths)}};
}

/// Checks that the knprobe-run/1 `header` of the file at `path` (given to `option`, e.g.
/// "--sets-from") describes results this command would compute: the same knprobe version, model
/// (hash), fact list (fingerprint) and, for every key of `options` (and every key of an object
/// value), the same option value; keys of the run that `options` does not name are not compared.
/// FormatError when it is not a run header, UsageError naming the first difference.
inline void require_run_header_matches(const std::string& option, const std::string& path,
                                       const nlohmann::json& header, const std::string& model_hash,
                                       const std::string& facts_fingerprint,
                                       const nlohmann::json& options) {
  KNPROBE_REQUIRE(header.is_object() && header.value("format", nlohmann::json()) == "knprobe-run/1",
                  FormatError, option, " ", path, ": not a knprobe run results file");
  const nlohmann::json none;
  auto at = [&](const nlohmann::json& j, const std::string& k) -> const nlohmann::json& {
    return j.is_object() && j.contains(k) ? j.at(k) : none;
  };
  auto require = [&](const std::string& what, const nlohmann::json& there,
                     const nlohmann::json& here) {
    if (there != here)
      throw UsageError(option + " " + path + ": the run's " + what + " is " + there.dump() +
                       ", this command's " + here.dump() +
                       ": its results are not what this command would compute");
  };
  // another version may attribute, select or search differently
  require("knprobe version", at(header, "knprobe_version"), KNPROBE_VERSION_STRING);
  require("model hash", at(at(header, "model"), "hash"), model_hash);
  require("fact list (fingerprint)", at(at(header, "facts"), "fingerprint"), facts_fingerprint);
  const auto& opt = at(header, "options");
  for (const auto& [k, v] : options.items()) {
    if (!v.is_object() || !at(opt, k).is_object()) {
      require("option '" + k + "'", at(opt, k), v);
      continue;
    }
    for (const auto& [sub, x] : v.items())
      require("option '" + k + "." + sub + "'", at(at(opt, k), sub), x);
  }
}

/// The header keys that do not decide resuming.
inline const std::vector<std::string>& run_header_informative_keys() {
  static const std::vector<std::string> k{"paths"};
  return k;
}

/// Parses and checks one record of a knprobe-run/1 results file against the file's header (the
/// work list: fact count, shard, languages, model size) and, when given, the facts of this run.
/// FormatError "<where>: ..." naming what is wrong: a record is accepted only if it describes an
/// item of this run, with finite numbers where numbers are read.
inline RunRecord parse_run_record(const nlohmann::json& r, const nlohmann::json& header,
                                  const std::string& where,
                                  const std::vector<Fact>* facts = nullptr) {
  auto fail = [&](const std::string& why) { throw FormatError(where + ": " + why); };
  if (!r.is_object()) fail("not a JSON object");
  const auto kind_it = r.find("record");
  if (kind_it == r.end() || !kind_it->is_string()) fail("no string 'record'");
  const std::string kind = kind_it->get<std::string>();
  RunRecord out;
  if (kind == "result")
    out.kind = RunRecordKind::result;
  else if (kind == "screened_out")
    out.kind = RunRecordKind::screened_out;
  else if (kind == "failure")
    out.kind = RunRecordKind::failure;
  else if (kind == "likn")
    out.kind = RunRecordKind::likn;
  else
    fail("record kind '" + kind.substr(0, 40) +
         "' is not one of result, screened_out, failure, likn");
  const auto count = io::json_int<long long>(
      io::json_at(io::json_at(header, "facts", "header"), "count", "header facts"), 0, 1LL << 40,
      "header facts.count");
  if (count == 0) fail("the header lists no facts");
  out.index =
      io::json_int<long long>(io::json_at(r, "index", where), 0, count - 1, where + ": index");
  if (header.contains("shard")) {
    const auto rank = io::json_int<long long>(io::json_at(header["shard"], "rank", "shard"), 0,
                                              1 << 20, "header shard.rank");
    const auto n = io::json_int<long long>(io::json_at(header["shard"], "count", "shard"), 1,
                                           1 << 20, "header shard.count");
    if (out.index % n != rank)
      fail("index " + std::to_string(out.index) + " does not belong to shard " +
           std::to_string(rank) + " of " + std::to_string(n));
  }
  out.fact = io::json_string(io::json_at(r, "fact", where), where + ": fact");
  if (facts && out.fact != (*facts)[static_cast<std::size_t>(out.index)].id)
    fail("index " + std::to_string(out.index) + " is fact '" +
         (*facts)[static_cast<std::size_t>(out.index)].id + "' in this run, not '" +
         out.fact.substr(0, 60) + "'");
  if (const auto rel = r.find("relation"); rel != r.end() && rel->is_string())
    out.relation = rel->get<std::string>();
  const auto& langs =
      io::json_at(io::json_at(header, "options", "header"), "languages", "header options");
  if (out.kind != RunRecordKind::likn) {
    out.language = io::json_string(io::json_at(r, "language", where), where + ": language");
    if (std::find(langs.begin(), langs.end(), nlohmann::json(out.language)) == langs.end())
      fail("language '" + out.language.substr(0, 20) + "' is not one of this run's languages");
  }
  if (out.kind == RunRecordKind::screened_out || out.kind == RunRecordKind::failure)
    out.reason = io::json_string(io::json_at(r, "reason", where), where + ": reason");
  if (out.kind == RunRecordKind::likn)
    if (const auto why = r.find("reason"); why != r.end())
      out.reason = io::json_string(*why, where + ": reason");
  if (out.kind != RunRecordKind::result && out.kind != RunRecordKind::likn) return out;
  const auto& model = io::json_at(header, "model", "header");
  const int layers = io::json_int<int>(io::json_at(model, "layers", "header model"), 1, 1 << 16,
                                       "header model.layers");
  const int width = io::json_int<int>(io::json_at(model, "ffn_width", "header model"), 1, 1 << 24,
                                      "header model.ffn_width");
  auto neuron = [&](const nlohmann::json& n) {
    const bool obj = n.is_object();
    if (!obj && !(n.is_array() && n.size() >= 2)) fail("a neuron is not {layer, unit, score}");
    const Neuron x{io::json_int<int>(obj ? io::json_at(n, "layer", where) : n[0], 0, layers - 1,
                                     where + ": neuron layer"),
                   io::json_int<int>(obj ? io::json_at(n, "unit", where) : n[1], 0, width - 1,
                                     where + ": neuron unit")};
    return x;
  };
  const auto& neurons = io::json_at(r, "neurons", where);
  if (!neurons.is_array()) fail("'neurons' is not an array");
  for (const auto& n : neurons) {
    if (n.is_array() && n.size() != 2) fail("a neuron is not {layer, unit, score}");
    const Neuron x = neuron(n);
    double score = 0;
    if (n.is_object() && n.contains("score"))
      score = io::json_number(n["score"], -1e300, 1e300, where + ": neuron score");
    out.neurons.push_back({x, score});
  }
  // Effects: {"related": x, "unrelated": y, ...} of finite numbers, with the ids of the unrelated
  // facts and notes on missing controls as arrays of strings (LIKN: by language).
  auto effects = [&](const nlohmann::json& e, const std::string& at) {
    if (!e.is_object()) fail("'" + at + "' is not an object");
    EffectSet s;
    for (auto it = e.begin(); it != e.end(); ++it) {
      const std::string w = where + ": " + at + "." + it.key();
      if (it.key() == "unrelated_facts" || it.key() == "notes") {
        if (!it.value().is_array()) fail(at + "." + it.key() + " is not an array");
        auto& dst = it.key() == "notes" ? s.notes : s.unrelated_facts;
        for (const auto& x : it.value()) dst.push_back(io::json_string(x, w));
      } else {
        const double v = io::json_number(it.value(), -1e300, 1e300, w);
        for (const auto& [name, field] : s.fields())
          if (it.key() == name) *field = v;
      }
    }
    return s;
  };
  for (const char* key : {"suppress", "enhance"}) {
    if (!r.contains(key)) continue;
    const bool sup = std::string(key) == "suppress";
    if (out.kind == RunRecordKind::result) {
      (sup ? out.suppress : out.enhance) = effects(r[key], key);
    } else {
      if (!r[key].is_object()) fail(std::string("'") + key + "' is not an object");
      for (auto it = r[key].begin(); it != r[key].end(); ++it)
        (sup ? out.likn_suppress : out.likn_enhance)[it.key()] =
            effects(it.value(), std::string(key) + "." + it.key());
    }
  }
  if (out.kind != RunRecordKind::result) return out;
  for (auto [key, dst] : {std::pair{"prompt", &out.prompt}, std::pair{"answer", &out.answer}})
    if (const auto it = r.find(key); it != r.end()) *dst = io::json_string(*it, where + ": " + key);
  out.p_answer = io::json_number(io::json_at(r, "p_answer", where), 0.0, 1.0, where + ": p_answer");
  if (r.contains("max_completeness_delta"))
    out.max_completeness_delta = io::json_number(r["max_completeness_delta"], 0.0, 1e300,
                                                 where + ": max_completeness_delta");
  if (r.contains("dkn")) {
    const auto& d = r["dkn"];
    RunDkn dkn;
    const auto& sets = io::json_at(d, "degenerate", where + ": dkn");
    if (!sets.is_array()) fail("dkn.degenerate is not an array");
    for (const auto& set : sets) {
      if (!set.is_array()) fail("a dkn.degenerate entry is not an array");
      std::vector<Neuron> v;
      for (const auto& n : set) v.push_back(neuron(n));
      dkn.degenerate.push_back(std::move(v));
    }
    if (d.contains("forward_passes"))
      dkn.forward_passes = static_cast<std::size_t>(io::json_int<long long>(
          d["forward_passes"], 0, 1LL << 50, where + ": dkn.forward_passes"));
    dkn.searched = !d.contains("note");
    out.dkn = std::move(dkn);
  }
  if (r.contains("top_by_layer")) {
    const auto& t = r["top_by_layer"];
    if (!t.is_array() || static_cast<int>(t.size()) != layers)
      fail("'top_by_layer' must hold one entry per layer (" + std::to_string(layers) + ")");
    for (const auto& row : t) {
      if (!row.is_array()) fail("a 'top_by_layer' row is not an array");
      std::vector<std::pair<int, double>> v;
      for (const auto& c : row) {
        if (!c.is_array() || c.size() != 2) fail("a 'top_by_layer' entry is not [unit, score]");
        v.push_back({io::json_int<int>(c[0], 0, width - 1, where + ": top_by_layer unit"),
                     io::json_number(c[1], -1e300, 1e300, where + ": top_by_layer score")});
      }
      out.top_by_layer.push_back(std::move(v));
    }
  }
  return out;
}

/// Parses every record of a results file (see parse_run_record), refusing a second record of one
/// item; lines are numbered as in the file (the header is line 1).
inline std::vector<RunRecord> parse_run_records(const nlohmann::json& header,
                                                const std::vector<nlohmann::json>& records,
                                                const std::string& path,
                                                const std::vector<Fact>* facts = nullptr) {
  KNPROBE_REQUIRE(header.is_object() && header.value("format", nlohmann::json()) == "knprobe-run/1",
                  FormatError, path, ": not a knprobe run results file (header format is not ",
                  "knprobe-run/1)");
  std::vector<RunRecord> out;
  std::set<std::pair<long long, std::string>> seen;
  for (std::size_t i = 0; i < records.size(); ++i) {
    const std::string where = path + ":" + std::to_string(i + 2);
    out.push_back(parse_run_record(records[i], header, where, facts));
    const auto key = out.back().item();
    KNPROBE_REQUIRE(seen.insert(key).second, FormatError, where, ": a second record of fact index ",
                    key.first, " [", key.second.empty() ? "LIKN" : key.second, "]");
  }
  return out;
}

/// The neurons each result record of a run selected, fact id → language → set: the input of an
/// experiment that reuses a run's localization instead of attributing again (`knprobe edit
/// --sets-from`). Records are parsed and checked as by parse_run_records (against `facts`, the
/// run's fact list, when given); screened-out, failed and LIKN records give nothing.
inline std::map<std::string, std::map<std::string, NeuronSet>> run_selections(
    const nlohmann::json& header, const std::vector<nlohmann::json>& records,
    const std::string& path, const std::vector<Fact>* facts = nullptr) {
  std::map<std::string, std::map<std::string, NeuronSet>> out;
  for (const auto& r : parse_run_records(header, records, path, facts))
    if (r.kind == RunRecordKind::result) out[r.fact][r.language] = r.neuron_set();
  return out;
}

/// The DKN search of each result record of a run that searched (`knprobe run --dkn`), fact id →
/// language → result: the input of fact-checking that reuses a run's searches (`knprobe factcheck
/// --dkn-from`). Records are parsed and checked as by parse_run_records (against `facts`, when
/// given).
inline std::map<std::string, std::map<std::string, RunDkn>> run_dkn_results(
    const nlohmann::json& header, const std::vector<nlohmann::json>& records,
    const std::string& path, const std::vector<Fact>* facts = nullptr) {
  std::map<std::string, std::map<std::string, RunDkn>> out;
  for (const auto& r : parse_run_records(header, records, path, facts))
    if (r.kind == RunRecordKind::result && r.dkn) out[r.fact][r.language] = *r.dkn;
  return out;
}

}  // namespace knprobe
