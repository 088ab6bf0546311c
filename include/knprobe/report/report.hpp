#pragma once
// Reports of dataset runs: from the records of one or more `knprobe run` results files (and
// optionally a `knprobe factcheck` result) compute the paper's summaries and render them as one
// self-contained HTML page with inline SVG figures (no script, no fetched asset) and as Markdown:
//   - knowledge neurons over layers, per language: share of the selected neurons in each layer;
//   - attribution heatmap of one fact: layers × the top units of each layer, score / max score;
//   - LIKN overlap across languages: mean |N_a ∩ N_b| / |N_a ∪ N_b| per language pair, LIKN size;
//   - suppress (×0) / enhance (×2) effects: mean relative change of P(answer) on the fact itself,
//     on K unrelated facts (signed and absolute means) and for the random and magnitude-matched
//     controls, with bootstrap 95 % intervals; Succ = |E_rel/E_unrel| + |S_rel/S_unrel|;
//   - degenerate neurons: facts with DKN, sets per fact, set sizes, forward passes;
//   - fact-checking: precision / recall / F1 / accuracy of DKN vs the model's own prediction;
//   - each run's header (options, model hash, version).

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "knprobe/core/error.hpp"
#include "knprobe/experiments/run.hpp"
#include "knprobe/experiments/run_records.hpp"
#include "knprobe/experiments/statistics.hpp"
#include "knprobe/io/json_get.hpp"

namespace knprobe {

/// One results file: its path (for labels), header and records.
struct RunInput {
  std::string path;
  nlohmann::json header;
  std::vector<nlohmann::json> records;
};

struct ReportInput {
  std::vector<RunInput> runs;
  nlohmann::json factcheck;  ///< a factcheck.json, or null
  std::string factcheck_path;
  std::string fact;  ///< fact id of the heatmap ("" = the first fact with a result)
};

/// Means over the results of one language of one run.
struct LanguageSummary {
  std::size_t results = 0, screened_out = 0, failures = 0;
  double mean_neurons = 0, mean_max_delta = 0;
  std::optional<Interval> neurons_ci;    ///< bootstrap 95 % interval of mean_neurons
  std::optional<Interval> max_delta_ci;  ///< bootstrap 95 % interval of mean_max_delta
  std::vector<double> layer_share;       ///< share of the selected neurons in each layer
  std::map<std::string, std::optional<double>> effects;  ///< "suppress_related", ... (means)
  /// Bootstrap 95 % intervals of those means (resampling facts; absent below 2 facts).
  std::map<std::string, std::optional<Interval>> effect_ci;
  std::optional<double> succ;
  std::optional<Interval> succ_ci;  ///< bootstrap over facts
  bool succ_unstable = true;        ///< a denominator's interval contains 0: not evidence
  std::size_t dkn_facts = 0, dkn_with_sets = 0, dkn_sets = 0, dkn_neurons = 0, dkn_passes = 0;
  std::size_t dkn_unsearched = 0;            ///< results whose fact had fewer than 2 DKN candidates
  std::optional<Interval> dkn_with_sets_ci;  ///< Wilson 95 % interval of dkn_with_sets / dkn_facts
  std::optional<Interval> dkn_sets_ci;       ///< bootstrap 95 % interval of DKN sets per fact
  std::optional<Interval> dkn_set_size_ci;   ///< of the mean set size (ratio, resampling the
                                             ///< facts that have a DKN set)
  std::optional<Interval> dkn_passes_ci;     ///< of the forward passes per fact
};

struct PairOverlap {
  std::string a, b;
  std::size_t facts = 0;
  double mean_jaccard = 0, mean_shared = 0;
  std::optional<Interval> jaccard_ci, shared_ci;  ///< bootstrap 95 % intervals over facts
};

struct RunSummaryReport {
  std::string label;  ///< file name and method
  nlohmann::json header;
  int layers = 0;
  std::map<std::string, LanguageSummary> languages;  ///< in header language order when sorted
  std::vector<std::string> language_order;
  std::vector<PairOverlap> overlaps;
  std::size_t likn_facts = 0, likn_nonempty = 0;
  double mean_likn = 0;
  std::optional<Interval> likn_ci;  ///< of mean_likn, over facts
  /// Effects of suppressing / enhancing each fact's LIKN set, measured in each language: means
  /// over facts ("suppress_related", …, the fields of an EffectSet) and their 95 % intervals.
  std::map<std::string, std::map<std::string, std::optional<double>>> likn_effects;
  std::map<std::string, std::map<std::string, std::optional<Interval>>> likn_effect_ci;
  /// Facts whose LIKN set has some effect measured in the language (a field may have fewer:
  /// a control that could not be drawn is absent, and each interval says its own n).
  std::map<std::string, std::size_t> likn_measured;
  std::vector<std::pair<std::string, std::string>> failures;  ///< (item, reason), first 50
  /// Generic neurons (docs/METHOD.md §10), per language: the neurons selected for the most facts,
  /// as (layer, unit, facts, relations), and how many are selected for more than 10 % of the facts.
  std::map<std::string, std::vector<std::tuple<int, int, std::size_t, std::size_t>>> recurrence;
  std::map<std::string, std::size_t> recurrent_over_10pct;
  /// Per-item values for paired comparisons of runs: metric → "index language" → value.
  std::map<std::string, std::map<std::string, double>> item_values;
};

struct HeatmapData {
  std::string run, fact, language, prompt, answer;
  std::vector<std::vector<std::pair<int, double>>> rows;  ///< per layer: (unit, score)
  std::set<std::pair<int, int>> selected;                 ///< (layer, unit) knowledge neurons
};

struct Report {
  std::vector<RunSummaryReport> runs;
  std::vector<HeatmapData> heatmaps;  ///< one per language of the chosen fact
  nlohmann::json factcheck;
  std::string factcheck_path;
};

namespace detail {

inline std::optional<double> mean_opt(const std::vector<double>& v) {
  if (v.empty()) return std::nullopt;
  return mean_of_values(v);
}

/// Bootstrap 95 % interval of the mean of `v` (report defaults: 2000 resamples, seed 42, so a
/// report is reproducible); none below 2 values.
inline std::optional<Interval> mean_interval(const std::vector<double>& v,
                                             const std::string& what) {
  if (v.size() < 2) return std::nullopt;
  return summarize(v, BootstrapOptions{}, what).mean_ci;
}

/// Means over facts of every effect field, "suppress_related" … "enhance_control_magnitude", and
/// their intervals, from the per-fact values in `acc` (missing keys: no value, no interval).
inline void effect_means(std::map<std::string, std::vector<double>>& acc, const std::string& what,
                         std::map<std::string, std::optional<double>>& mean,
                         std::map<std::string, std::optional<Interval>>& ci) {
  for (const char* kind : {"suppress", "enhance"})
    for (const char* where : k_effect_fields) {
      const std::string k = std::string(kind) + "_" + where;
      mean[k] = mean_opt(acc[k]);
      ci[k] = mean_interval(acc[k], what + "/" + k);
    }
}

inline std::string base_name(const std::string& p) {
  const auto k = p.find_last_of('/');
  return k == std::string::npos ? p : p.substr(k + 1);
}

/// Checks the part of a factcheck.json (`knprobe factcheck --out`) that the report reads:
/// {"summary": {<language>: {"test"|"train": {"dkn"|"baseline": {<metric>: number}}}}}; every
/// metric present must be a finite number. FormatError naming the file and the key otherwise.
inline void validate_factcheck(const nlohmann::json& fc, const std::string& path) {
  KNPROBE_REQUIRE(fc.is_object(), FormatError, path, ": not a JSON object (a factcheck.json?)");
  if (!fc.contains("summary")) return;
  const auto& s = fc["summary"];
  KNPROBE_REQUIRE(s.is_object(), FormatError, path, ": 'summary' is not an object");
  for (auto l = s.begin(); l != s.end(); ++l) {
    const std::string wl = path + ": summary." + l.key();
    KNPROBE_REQUIRE(l.value().is_object(), FormatError, wl, " is not an object");
    for (const char* split : {"test", "test_1to1", "train"}) {
      if (!l.value().contains(split)) continue;
      const auto& sp = l.value()[split];
      KNPROBE_REQUIRE(sp.is_object(), FormatError, wl, ".", split, " is not an object");
      for (const char* checker : {"dkn", "baseline", "baseline_p"}) {
        if (!sp.contains(checker)) continue;
        const auto& m = sp[checker];
        const std::string wm = wl + "." + split + "." + checker;
        KNPROBE_REQUIRE(m.is_object(), FormatError, wm, " is not an object");
        for (const char* k : {"precision", "recall", "f1", "accuracy", "precision_ref", "f1_ref"})
          if (m.contains(k) && !m[k].is_null())  // null: undefined (a rate over nothing)
            io::json_number(m[k], -1e300, 1e300, wm + "." + k);
      }
    }
  }
}

inline Report build_report_unchecked(const ReportInput& in) {
  KNPROBE_REQUIRE(!in.runs.empty(), ArgumentError, "report: no results files");
  Report rep;
  if (!in.factcheck.is_null()) detail::validate_factcheck(in.factcheck, in.factcheck_path);
  rep.factcheck = in.factcheck;
  rep.factcheck_path = in.factcheck_path;
  std::vector<std::vector<RunRecord>> parsed;  // by run, typed
  for (const auto& run : in.runs) {
    KNPROBE_REQUIRE(run.header.is_object(), ArgumentError, "report: ", run.path,
                    " has no header record (is it a `knprobe run` results file?)");
    parsed.push_back(parse_run_records(run.header, run.records, run.path));
    const std::vector<RunRecord>& records = parsed.back();
    RunSummaryReport r;
    r.header = run.header;
    const auto opt = run.header.value("options", nlohmann::json::object());
    r.label = detail::base_name(run.path) + " (" + opt.value("method", std::string("?")) + ")";
    if (const auto m = run.header.find("model");
        m != run.header.end() && m->is_object() && m->contains("layers"))
      r.layers = io::json_int<int>((*m)["layers"], 0, 1 << 16, run.path + ": header model.layers");
    r.language_order = opt.value("languages", std::vector<std::string>{});
    std::map<std::string, std::map<std::string, std::vector<double>>> acc;
    std::map<std::string, std::vector<double>> layer_counts;
    std::map<long long, std::map<std::string, std::set<std::pair<int, int>>>> sets;
    std::map<std::string,
             std::map<std::pair<int, int>, std::pair<std::size_t, std::set<std::string>>>>
        recur;
    std::vector<double> likn_sizes;
    std::map<std::string, std::map<std::string, std::vector<double>>> likn_acc;  // lang → field
    std::map<std::string, std::set<long long>> likn_measured;  // lang → facts with an effect
    for (const RunRecord& rec : records) {
      const std::string& lang = rec.language;
      if (rec.kind == RunRecordKind::screened_out) ++r.languages[lang].screened_out;
      if (rec.kind == RunRecordKind::failure) {
        ++r.languages[lang].failures;
        if (r.failures.size() < 50)
          r.failures.push_back({rec.fact + " [" + lang + "]", rec.reason});
      }
      if (rec.kind == RunRecordKind::likn) {
        if (!rec.reason.empty() && rec.neurons.empty()) continue;
        likn_sizes.push_back(static_cast<double>(rec.neurons.size()));
        for (const auto& [what, by] :
             {std::pair{"suppress", &rec.likn_suppress}, std::pair{"enhance", &rec.likn_enhance}})
          for (const auto& [l, e] : *by)
            for (const auto& [where, v] : e.fields())
              if (*v) {
                likn_acc[l][std::string(what) + "_" + where].push_back(**v);
                likn_measured[l].insert(rec.index);
              }
      }
      if (rec.kind != RunRecordKind::result) continue;
      auto& s = r.languages[lang];
      auto& a = acc[lang];
      ++s.results;
      a["neurons"].push_back(static_cast<double>(rec.neurons.size()));
      a["max_delta"].push_back(rec.max_completeness_delta.value_or(0.0));
      const std::string item = std::to_string(rec.index) + " " + lang;
      r.item_values["neurons"][item] = static_cast<double>(rec.neurons.size());
      auto& lc = layer_counts[lang];
      for (const auto& [n, score] : rec.neurons) {
        if (n.layer >= static_cast<int>(lc.size()))
          lc.resize(static_cast<std::size_t>(n.layer) + 1, 0.0);
        lc[static_cast<std::size_t>(n.layer)] += 1;
        sets[rec.index][lang].insert({n.layer, n.unit});
        auto& [facts_n, rels] = recur[lang][{n.layer, n.unit}];
        ++facts_n;
        rels.insert(rec.relation);
      }
      for (const auto& [what, e] :
           {std::pair{"suppress", &rec.suppress}, std::pair{"enhance", &rec.enhance}}) {
        for (const auto& [where, v] : e->fields())
          if (*v) a[std::string(what) + "_" + where].push_back(**v);
        for (const auto& [where, v] :
             {std::pair{"related", &e->related}, std::pair{"unrelated_abs", &e->unrelated_abs}})
          if (*v) r.item_values[std::string(what) + "_" + where][item] = **v;
        // pairs for Succ: facts with both a related and an unrelated effect
        if (e->related && e->unrelated) {
          a[std::string(what) + "_pair_rel"].push_back(*e->related);
          a[std::string(what) + "_pair_unrel"].push_back(*e->unrelated);
        }
      }
      if (rec.dkn && !rec.dkn->searched) {
        ++s.dkn_unsearched;  // fewer than 2 candidates: not searched (not "no DKN")
      } else if (rec.dkn) {
        ++s.dkn_facts;
        s.dkn_with_sets += !rec.dkn->degenerate.empty();
        a["dkn_sets"].push_back(static_cast<double>(rec.dkn->degenerate.size()));
        if (!rec.dkn->degenerate.empty()) {  // mean set size: over the facts that have a set
          double in_sets = 0;
          for (const auto& set : rec.dkn->degenerate) in_sets += static_cast<double>(set.size());
          a["dkn_set_neurons"].push_back(in_sets);
          a["dkn_set_count"].push_back(static_cast<double>(rec.dkn->degenerate.size()));
        }
        a["dkn_passes"].push_back(static_cast<double>(rec.dkn->forward_passes));
        s.dkn_sets += rec.dkn->degenerate.size();
        for (const auto& set : rec.dkn->degenerate) s.dkn_neurons += set.size();
        s.dkn_passes += rec.dkn->forward_passes;
      }
    }
    for (auto& [lang, s] : r.languages) {
      auto& a = acc[lang];
      s.mean_neurons = detail::mean_opt(a["neurons"]).value_or(0.0);
      s.neurons_ci = detail::mean_interval(a["neurons"], lang + "/neurons");
      s.mean_max_delta = detail::mean_opt(a["max_delta"]).value_or(0.0);
      s.max_delta_ci = detail::mean_interval(a["max_delta"], lang + "/max_delta");
      s.dkn_with_sets_ci = wilson_interval(s.dkn_with_sets, s.dkn_facts);
      s.dkn_sets_ci = detail::mean_interval(a["dkn_sets"], lang + "/dkn_sets");
      s.dkn_set_size_ci =
          ratio_of_means(a["dkn_set_neurons"], a["dkn_set_count"], {}, lang + "/dkn_set_size").ci;
      s.dkn_passes_ci = detail::mean_interval(a["dkn_passes"], lang + "/dkn_passes");
      auto lc = layer_counts[lang];
      lc.resize(static_cast<std::size_t>(std::max<int>(r.layers, static_cast<int>(lc.size()))),
                0.0);
      double total = 0;
      for (double x : lc) total += x;
      for (double& x : lc) x = total > 0 ? x / total : 0.0;
      s.layer_share = lc;
      const BootstrapOptions boot;  // 2000 resamples, 95 %, seed 42: a report is reproducible
      detail::effect_means(a, lang, s.effects, s.effect_ci);
      // Succ = |E_rel / E_unrel| + |S_rel / S_unrel| over the mean effects of the same facts,
      // with a bootstrap interval over facts (statistics.hpp succ_summary).
      if (a["suppress_pair_rel"].size() == a["enhance_pair_rel"].size()) {
        const auto sc =
            succ_summary(a["suppress_pair_rel"], a["suppress_pair_unrel"], a["enhance_pair_rel"],
                         a["enhance_pair_unrel"], boot, lang + "/succ");
        s.succ = sc.ratio;
        s.succ_ci = sc.ci;
        s.succ_unstable = sc.unstable;
      }
      if (std::find(r.language_order.begin(), r.language_order.end(), lang) ==
          r.language_order.end())
        r.language_order.push_back(lang);
    }
    for (std::size_t i = 0; i < r.language_order.size(); ++i)
      for (std::size_t j = i + 1; j < r.language_order.size(); ++j) {
        PairOverlap p;
        p.a = r.language_order[i];
        p.b = r.language_order[j];
        std::vector<double> jac, shared;
        for (const auto& [idx, by] : sets) {
          if (!by.count(p.a) || !by.count(p.b)) continue;
          const auto &x = by.at(p.a), &y = by.at(p.b);
          std::size_t inter = 0;
          for (const auto& n : x) inter += y.count(n);
          const std::size_t uni = x.size() + y.size() - inter;
          jac.push_back(uni ? static_cast<double>(inter) / static_cast<double>(uni) : 0.0);
          shared.push_back(static_cast<double>(inter));
        }
        p.facts = jac.size();
        p.mean_jaccard = detail::mean_opt(jac).value_or(0.0);
        p.mean_shared = detail::mean_opt(shared).value_or(0.0);
        p.jaccard_ci = detail::mean_interval(jac, p.a + "-" + p.b + "/jaccard");
        p.shared_ci = detail::mean_interval(shared, p.a + "-" + p.b + "/shared");
        r.overlaps.push_back(p);
      }
    for (const auto& [lang, by] : recur) {
      std::vector<std::tuple<int, int, std::size_t, std::size_t>> v;
      for (const auto& [n, fr] : by) v.push_back({n.first, n.second, fr.first, fr.second.size()});
      std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
        return std::get<2>(a) != std::get<2>(b) ? std::get<2>(a) > std::get<2>(b) : a < b;
      });
      const double nf = static_cast<double>(r.languages[lang].results);
      std::size_t over = 0;
      for (const auto& t : v) over += static_cast<double>(std::get<2>(t)) > 0.1 * nf;
      r.recurrent_over_10pct[lang] = over;
      v.resize(std::min<std::size_t>(v.size(), 5));
      r.recurrence[lang] = v;
    }
    r.likn_facts = likn_sizes.size();
    for (double x : likn_sizes) r.likn_nonempty += x > 0;
    r.mean_likn = detail::mean_opt(likn_sizes).value_or(0.0);
    r.likn_ci = detail::mean_interval(likn_sizes, "likn/size");
    for (auto& [lang, a] : likn_acc) {
      detail::effect_means(a, "likn/" + lang, r.likn_effects[lang], r.likn_effect_ci[lang]);
      r.likn_measured[lang] = likn_measured[lang].size();
    }
    rep.runs.push_back(std::move(r));
  }
  // Heatmap: the chosen fact (or the first result) in every language, from the first run with it.
  for (std::size_t k = 0; k < in.runs.size(); ++k) {
    std::string fact = in.fact;
    for (const RunRecord& rec : parsed[k]) {
      if (rec.kind != RunRecordKind::result || rec.top_by_layer.empty()) continue;
      if (fact.empty()) fact = rec.fact;
      if (rec.fact != fact) continue;
      HeatmapData h{detail::base_name(in.runs[k].path),
                    fact,
                    rec.language,
                    rec.prompt,
                    rec.answer,
                    rec.top_by_layer,
                    {}};
      for (const auto& [n, score] : rec.neurons) h.selected.insert({n.layer, n.unit});
      rep.heatmaps.push_back(std::move(h));
    }
    if (!rep.heatmaps.empty()) break;
  }
  KNPROBE_REQUIRE(in.fact.empty() || !rep.heatmaps.empty(), ArgumentError, "report: fact '",
                  in.fact, "' has no result with per-layer scores in the results files");
  return rep;
}
}  // namespace detail

/// Summaries of every run and the heatmap data of the chosen fact. Throws ArgumentError when a
/// run has no header or `in.fact` names a fact that no run has a result for, FormatError when an
/// input holds a field of an unexpected type.
inline Report build_report(const ReportInput& in) {
  try {
    return detail::build_report_unchecked(in);
  } catch (const nlohmann::json::exception& e) {  // a field of an input has an unexpected shape
    std::string inputs;
    for (const auto& r : in.runs) inputs += (inputs.empty() ? "" : ", ") + r.path;
    if (!in.factcheck_path.empty()) inputs += ", " + in.factcheck_path;
    throw FormatError("report: an input has a field of an unexpected type or shape (" +
                      io::detail::json_message(e) + "); inputs: " + inputs);
  }
}

namespace detail {

inline std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) switch (c) {
      case '&':
        o += "&amp;";
        break;
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '"':
        o += "&quot;";
        break;
      default:
        o += c;
    }
  return o;
}

inline std::string fmt(const char* f, double x) {
  char b[64];
  std::snprintf(b, sizeof b, f, x);
  return b;
}

inline std::string pct_or_na(const std::optional<double>& x) {
  return x ? fmt("%+.1f%%", 100.0 * *x) : "n/a";
}

inline const char* series_color(std::size_t i) {
  static const char* c[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};
  return c[i % 6];
}

struct Series {
  std::string name;
  std::vector<double> values;
  std::vector<std::optional<Interval>> errors;  ///< 95 % intervals drawn as error bars (optional)
};

/// A "nice" tick step for a range of `span` split into about `n` steps: 1, 2 or 5 × 10^k.
inline double nice_step(double span, int n = 4) {
  const double raw = span / n;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (const double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag * (1 + 1e-9)) return m * mag;
  return 10 * mag;
}

/// A grouped bar chart as an SVG element: one group per category, one bar per series, with error
/// bars where a series has intervals; values in the units of `axis`. The y range covers 0, every
/// value and every interval, extended to multiples of a nice step (ticks at round values).
inline std::string svg_bars(const std::vector<std::string>& categories,
                            const std::vector<Series>& series, const std::string& axis,
                            int width = 760, int height = 260) {
  const double left = 56, right = 12, top = 24, bottom = 44;
  double lo = 0, hi = 0;
  for (const auto& s : series) {
    for (double v : s.values) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    for (const auto& e : s.errors)
      if (e) {
        lo = std::min(lo, e->lo);
        hi = std::max(hi, e->hi);
      }
  }
  if (hi - lo < 1e-12) hi = lo + 1;
  const double step = nice_step(hi - lo);
  lo = std::floor(lo / step - 1e-9) * step;
  hi = std::ceil(hi / step - 1e-9) * step;
  const double plot_w = width - left - right, plot_h = height - top - bottom;
  auto y = [&](double v) { return top + (hi - v) / (hi - lo) * plot_h; };
  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
    << "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  const int ticks = static_cast<int>(std::lround((hi - lo) / step));
  for (int t = 0; t <= ticks; ++t) {
    double v = lo + step * t;
    if (std::abs(v) < step * 1e-9) v = 0;  // no "-0"
    o << "<line x1=\"" << left << "\" x2=\"" << width - right << "\" y1=\"" << y(v) << "\" y2=\""
      << y(v) << "\" stroke=\"#ddd\"/><text x=\"" << left - 4 << "\" y=\"" << y(v) + 4
      << "\" text-anchor=\"end\">" << fmt("%g", v) << "</text>\n";
  }
  o << "<line x1=\"" << left << "\" x2=\"" << width - right << "\" y1=\"" << y(0) << "\" y2=\""
    << y(0) << "\" stroke=\"#333\"/>\n";
  const double group = plot_w / std::max<std::size_t>(categories.size(), 1);
  const double bar = group * 0.8 / std::max<std::size_t>(series.size(), 1);
  for (std::size_t c = 0; c < categories.size(); ++c) {
    for (std::size_t s = 0; s < series.size(); ++s) {
      const double v = c < series[s].values.size() ? series[s].values[c] : 0.0;
      const double x = left + c * group + group * 0.1 + s * bar;
      o << "<rect x=\"" << x << "\" y=\"" << std::min(y(v), y(0)) << "\" width=\""
        << std::max(bar - 1, 1.0) << "\" height=\"" << std::abs(y(v) - y(0)) << "\" fill=\""
        << series_color(s) << "\"><title>" << html_escape(series[s].name) << ", "
        << html_escape(categories[c]) << ": " << fmt("%.4g", v) << "</title></rect>\n";
      if (c < series[s].errors.size() && series[s].errors[c]) {
        const auto& e = *series[s].errors[c];
        const double cx = x + std::max(bar - 1, 1.0) / 2, cap = std::min(bar / 4, 4.0);
        o << "<path d=\"M" << cx << " " << y(e.lo) << "V" << y(e.hi) << "M" << cx - cap << " "
          << y(e.lo) << "H" << cx + cap << "M" << cx - cap << " " << y(e.hi) << "H" << cx + cap
          << "\" stroke=\"#222\" fill=\"none\"><title>95% CI " << fmt("%.4g", e.lo) << " to "
          << fmt("%.4g", e.hi) << "</title></path>\n";
      }
    }
    if (categories.size() <= 40)
      o << "<text x=\"" << left + (c + 0.5) * group << "\" y=\"" << height - bottom + 14
        << "\" text-anchor=\"middle\">" << html_escape(categories[c]) << "</text>\n";
  }
  o << "<text x=\"12\" y=\"" << top + plot_h / 2 << "\" transform=\"rotate(-90 12 "
    << top + plot_h / 2 << ")\" text-anchor=\"middle\">" << html_escape(axis) << "</text>\n";
  double lx = left;
  for (std::size_t s = 0; s < series.size(); ++s) {
    o << "<rect x=\"" << lx << "\" y=\"" << height - 16 << "\" width=\"10\" height=\"10\" fill=\""
      << series_color(s) << "\"/><text x=\"" << lx + 14 << "\" y=\"" << height - 7 << "\">"
      << html_escape(series[s].name) << "</text>\n";
    lx += 24 + 7.0 * static_cast<double>(series[s].name.size());
  }
  o << "</svg>\n";
  return o.str();
}

/// A heatmap of one fact as an SVG element: row = layer, column = rank within the layer, colour =
/// score / max score (negative scores white); selected knowledge neurons outlined.
inline std::string svg_heatmap(const HeatmapData& h) {
  const int cell = 26, left = 48, top = 20;
  const std::size_t cols = h.rows.empty() ? 0 : h.rows[0].size();
  double mx = 0;
  for (const auto& r : h.rows)
    for (const auto& [u, s] : r) mx = std::max(mx, s);
  if (mx <= 0) mx = 1;
  const auto width = std::max(left + static_cast<int>(cols) * cell + 20, 420);
  const auto height = top + static_cast<int>(h.rows.size()) * cell + 30;
  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
    << "\" font-family=\"sans-serif\" font-size=\"10\">\n";
  for (std::size_t c = 0; c < cols; ++c)
    o << "<text x=\"" << left + static_cast<int>(c) * cell + cell / 2 << "\" y=\"" << top - 6
      << "\" text-anchor=\"middle\">#" << c + 1 << "</text>\n";
  for (std::size_t l = 0; l < h.rows.size(); ++l) {
    const int yy = top + static_cast<int>(l) * cell;
    o << "<text x=\"" << left - 6 << "\" y=\"" << yy + cell / 2 + 4 << "\" text-anchor=\"end\">L"
      << l << "</text>\n";
    for (std::size_t c = 0; c < h.rows[l].size(); ++c) {
      const auto [unit, score] = h.rows[l][c];
      const double t = std::clamp(score / mx, 0.0, 1.0);
      const int g = static_cast<int>(std::lround(255 * (1 - t)));
      const bool sel = h.selected.count({static_cast<int>(l), unit}) > 0;
      o << "<rect x=\"" << left + static_cast<int>(c) * cell << "\" y=\"" << yy << "\" width=\""
        << cell - 1 << "\" height=\"" << cell - 1 << "\" fill=\"rgb(255," << g << "," << g << ")\""
        << (sel ? " stroke=\"#000\" stroke-width=\"2\"" : "") << "><title>L" << l << " unit "
        << unit << ": " << fmt("%.4g", score) << (sel ? " (knowledge neuron)" : "")
        << "</title></rect>\n";
    }
  }
  o << "<text x=\"" << left << "\" y=\"" << height - 8
    << "\">columns: the layer's units ranked by attribution; outlined: selected</text>\n</svg>\n";
  return o.str();
}

inline std::string metric_row(const nlohmann::json& m) {
  auto g = [&](const char* k) {  // null: undefined (e.g. precision when nothing is accepted)
    return m.contains(k) && !m[k].is_null() ? fmt("%.3f", m[k].get<double>()) : std::string("n/a");
  };
  return " | " + g("precision") + " | " + g("recall") + " | " + g("f1") + " | " + g("accuracy") +
         " | " + g("precision_ref") + " | " + g("f1_ref") + " |";
}

/// " [lo, hi]" of an interval printed with `f` ("" when there is none).
inline std::string ci_text(const std::optional<Interval>& ci, const char* f, double scale = 1) {
  return ci ? " [" + fmt(f, scale * ci->lo) + ", " + fmt(f, scale * ci->hi) + "]" : std::string();
}

/// Two Markdown rows (suppress, enhance) of mean effects with their intervals, after `lead`.
inline void effect_rows(std::ostream& o, const std::string& lead,
                        const std::map<std::string, std::optional<double>>& effects,
                        const std::map<std::string, std::optional<Interval>>& ci) {
  for (const char* what : {"suppress", "enhance"}) {
    o << lead << " | " << what;
    for (const char* where : k_effect_fields) {
      const std::string k = std::string(what) + "_" + where;
      o << " | " << pct_or_na(effects.count(k) ? effects.at(k) : std::nullopt)
        << ci_text(ci.count(k) ? ci.at(k) : std::nullopt, "%+.1f", 100);
    }
    o << " |\n";
  }
}

/// The report's tables as Markdown (HTML converts them; the Markdown file is the same text).
inline std::string tables_markdown(const Report& rep) {
  std::ostringstream o;
  for (const auto& r : rep.runs) {
    o << "### " << r.label << "\n\n"
      << "| language | results | screened out | failures | neurons [95% CI] | Succ [95% CI] | "
         "completeness δ [95% CI] |\n|---|---|---|---|---|---|---|\n";
    for (const auto& lang : r.language_order) {
      if (!r.languages.count(lang)) continue;
      const auto& s = r.languages.at(lang);
      std::string succ = s.succ ? fmt("%.1f", *s.succ) : "n/a";
      if (s.succ_ci)
        succ += " [" + fmt("%.1f", s.succ_ci->lo) + ", " + fmt("%.1f", s.succ_ci->hi) + "]";
      if (s.succ && s.succ_unstable) succ += " (unstable)";
      o << "| " << lang << " | " << s.results << " | " << s.screened_out << " | " << s.failures
        << " | " << fmt("%.2f", s.mean_neurons) << ci_text(s.neurons_ci, "%.2f") << " | " << succ
        << " | " << fmt("%.3g", s.mean_max_delta) << ci_text(s.max_delta_ci, "%.3g") << " |\n";
    }
    // Effects with their bootstrap 95 % intervals (relative change of P(answer), mean over facts).
    o << "\n| language | intervention | related | unrelated | unrelated, mean abs | random control "
         "| "
         "magnitude control |\n|---|---|---|---|---|---|---|\n";
    for (const auto& lang : r.language_order) {
      if (!r.languages.count(lang) || r.languages.at(lang).results == 0) continue;
      const auto& s = r.languages.at(lang);
      effect_rows(o, "| " + lang, s.effects, s.effect_ci);
    }
    if (!r.overlaps.empty()) {
      o << "\n| languages | facts | mean shared neurons [95% CI] | mean Jaccard [95% CI] "
           "|\n|---|---|---|---|\n";
      for (const auto& p : r.overlaps)
        o << "| " << p.a << " – " << p.b << " | " << p.facts << " | " << fmt("%.2f", p.mean_shared)
          << ci_text(p.shared_ci, "%.2f") << " | " << fmt("%.3f", p.mean_jaccard)
          << ci_text(p.jaccard_ci, "%.3f") << " |\n";
      o << "\nLIKN (all languages): " << fmt("%.2f", r.mean_likn) << ci_text(r.likn_ci, "%.2f")
        << " neurons per fact, " << r.likn_nonempty << " of " << r.likn_facts
        << " facts have one.\n";
      if (!r.likn_effects.empty()) {
        // the LIKN set's effects with the same controls as the per-language sets (§10)
        o << "\n| measured in | LIKN facts | intervention | related | unrelated | unrelated, mean "
             "abs | random control | magnitude control |\n|---|---|---|---|---|---|---|---|\n";
        for (const auto& lang : r.language_order)
          if (r.likn_effects.count(lang))
            effect_rows(o, "| " + lang + " | " + std::to_string(r.likn_measured.at(lang)),
                        r.likn_effects.at(lang), r.likn_effect_ci.at(lang));
      }
    }
    for (const auto& lang : r.language_order) {
      if (!r.recurrence.count(lang)) continue;
      o << "\nRecurrence [" << lang << "]: " << r.recurrent_over_10pct.at(lang)
        << " neurons are selected for more than 10% of the facts; most frequent:";
      for (const auto& [l, u, nf, nr] : r.recurrence.at(lang))
        o << " L" << l << "." << u << " (" << nf << " facts, " << nr << " relations)";
      o << ".\n";
    }
    bool dkn = false;
    for (const auto& [lang, s] : r.languages) dkn |= s.dkn_facts + s.dkn_unsearched > 0;
    if (dkn) {
      // shares with Wilson intervals, means with bootstrap intervals over the searched facts
      o << "\n| language | facts searched | fewer than 2 candidates | facts with DKN (share [95% "
           "CI]) | DKN sets per fact [95% CI] | mean set size [95% CI] | forward passes per fact "
           "[95% CI] |\n|---|---|---|---|---|---|---|\n";
      for (const auto& lang : r.language_order) {
        if (!r.languages.count(lang)) continue;
        const auto& s = r.languages.at(lang);
        const double n = static_cast<double>(std::max<std::size_t>(s.dkn_facts, 1));
        o << "| " << lang << " | " << s.dkn_facts << " | " << s.dkn_unsearched << " | "
          << s.dkn_with_sets
          << (s.dkn_facts ? " (" + fmt("%.3f", static_cast<double>(s.dkn_with_sets) / n) +
                                ci_text(s.dkn_with_sets_ci, "%.3f") + ")"
                          : std::string())
          << " | " << fmt("%.2f", static_cast<double>(s.dkn_sets) / n)
          << ci_text(s.dkn_sets_ci, "%.2f") << " | "
          << (s.dkn_sets ? fmt("%.2f", static_cast<double>(s.dkn_neurons) /
                                           static_cast<double>(s.dkn_sets)) +
                               ci_text(s.dkn_set_size_ci, "%.2f")
                         : std::string("n/a"))
          << " | " << fmt("%.0f", static_cast<double>(s.dkn_passes) / n)
          << ci_text(s.dkn_passes_ci, "%.0f") << " |\n";
      }
    }
    o << "\n";
  }
  // Paired differences of two runs of the same facts (e.g. AMIG vs IG, docs/METHOD.md §10): per
  // (fact, language) item present in both, the difference first − second, mean with its interval.
  for (std::size_t a = 0; a < rep.runs.size(); ++a)
    for (std::size_t b = a + 1; b < rep.runs.size(); ++b) {
      const auto& x = rep.runs[a];
      const auto& y = rep.runs[b];
      const auto fp = [](const RunSummaryReport& r) {
        return r.header.value("facts", nlohmann::json::object())
            .value("fingerprint", nlohmann::json());
      };
      if (fp(x).is_null() || fp(x) != fp(y)) continue;
      o << "### Paired differences: " << x.label << " − " << y.label << "\n\n"
        << "| language | per-fact value | facts in both | mean difference [95% CI] | median "
           "difference |\n|---|---|---|---|---|\n";
      for (const auto& lang : x.language_order)
        for (const auto& [metric, values] : x.item_values) {
          if (!y.item_values.count(metric)) continue;
          // one item per fact of this language: facts are the resampling unit
          std::map<std::string, double> xa, ya;
          const std::string suffix = " " + lang;
          auto pick = [&](const std::map<std::string, double>& m,
                          std::map<std::string, double>& out) {
            for (const auto& [k, v] : m)
              if (k.size() > suffix.size() &&
                  k.compare(k.size() - suffix.size(), suffix.size(), suffix) == 0)
                out[k] = v;
          };
          pick(values, xa);
          pick(y.item_values.at(metric), ya);
          const auto p = paired(xa, ya, BootstrapOptions{}, lang + "/" + metric);
          const auto& d = p.difference;
          if (d.n == 0) continue;
          const bool percent = metric != "neurons";
          auto show = [&](double v) { return percent ? fmt("%+.1f%%", 100 * v) : fmt("%+.2f", v); };
          o << "| " << lang << " | " << metric << " | " << d.n << " | " << show(d.mean);
          if (d.mean_ci) o << " [" << show(d.mean_ci->lo) << ", " << show(d.mean_ci->hi) << "]";
          o << " | " << show(d.median) << " |\n";
        }
      o << "\n";
    }
  if (rep.factcheck.is_object() && rep.factcheck.contains("summary")) {
    o << "### Fact-checking (" << base_name(rep.factcheck_path) << ")\n\n"
      << "| language | claims | checker | precision | recall | F1 | accuracy | precision (ref) | "
         "F1 (ref) |\n|---|---|---|---|---|---|---|---|---|\n";
    const auto& s = rep.factcheck.at("summary");
    for (auto it = s.begin(); it != s.end(); ++it)
      for (const char* split : {"test", "test_1to1", "train"})
        if (it.value().contains(split))
          for (const auto& [key, name] : {std::pair{"dkn", "DKN"},
                                          {"baseline", "model top-1"},
                                          {"baseline_p", "P(candidate)"}})
            if (it.value().at(split).contains(key))
              o << "| " << it.key() << " | " << split << " | " << name
                << metric_row(it.value().at(split).at(key)) << "\n";
    o << "\n";
  }
  return o.str();
}

/// A Markdown table ("| a | b |" lines) as an HTML table.
inline std::string markdown_tables_to_html(const std::string& md) {
  std::istringstream in(md);
  std::ostringstream o;
  std::string line;
  bool in_table = false, header = false;
  while (std::getline(in, line)) {
    if (line.rfind("|", 0) == 0) {
      if (line.rfind("|---", 0) == 0) continue;
      if (!in_table) {
        o << "<table>\n";
        in_table = header = true;
      }
      o << "<tr>";
      std::size_t p = 1;
      while (p < line.size()) {
        const auto q = line.find('|', p);
        if (q == std::string::npos) break;
        std::string cell = line.substr(p, q - p);
        cell.erase(0, cell.find_first_not_of(' '));
        cell.erase(cell.find_last_not_of(' ') + 1);
        o << (header ? "<th>" : "<td>") << html_escape(cell) << (header ? "</th>" : "</td>");
        p = q + 1;
      }
      o << "</tr>\n";
      header = false;
      continue;
    }
    if (in_table) {
      o << "</table>\n";
      in_table = false;
    }
    if (line.rfind("### ", 0) == 0)
      o << "<h3>" << html_escape(line.substr(4)) << "</h3>\n";
    else if (!line.empty())
      o << "<p>" << html_escape(line) << "</p>\n";
  }
  if (in_table) o << "</table>\n";
  return o.str();
}

}  // namespace detail

/// The report as Markdown: the tables of every section and each run's options.
inline std::string render_markdown(const Report& rep) {
  std::ostringstream o;
  o << "# knprobe report\n\n" << detail::tables_markdown(rep);
  for (const auto& r : rep.runs)
    o << "#### Run header: " << r.label << "\n\n```json\n" << r.header.dump(1) << "\n```\n\n";
  return o.str();
}

/// The report as one self-contained HTML page (inline CSS and SVG; no script, nothing fetched).
inline std::string render_html(const Report& rep) {
  std::ostringstream o;
  o << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
       "<title>knprobe report</title><style>"
       "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
       "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
       "font-size:13px}th{background:#f3f3f3}pre{background:#f7f7f7;padding:8px;overflow:auto;"
       "font-size:12px}h2{border-bottom:1px solid #ccc}</style></head><body>\n"
       "<h1>knprobe report</h1>\n";
  o << "<h2>Tables</h2>\n" << detail::markdown_tables_to_html(detail::tables_markdown(rep));
  for (const auto& r : rep.runs) {
    o << "<h2>" << detail::html_escape(r.label) << "</h2>\n";
    std::vector<std::string> layers;
    std::size_t nl = 0;
    for (const auto& [lang, s] : r.languages) nl = std::max(nl, s.layer_share.size());
    for (std::size_t l = 0; l < nl; ++l) layers.push_back(std::to_string(l));
    std::vector<detail::Series> share, effects;
    for (const auto& lang : r.language_order)
      if (r.languages.count(lang) && r.languages.at(lang).results > 0)
        share.push_back({lang, r.languages.at(lang).layer_share, {}});
    o << "<h3>Knowledge neurons over layers</h3>\n<p>Share of each language's selected neurons "
         "in each layer.</p>\n"
      << detail::svg_bars(layers, share, "share of neurons");
    const std::vector<std::string> cats{"suppress: related", "unrelated",        "random control",
                                        "magnitude control", "enhance: related", "unrelated",
                                        "random control",    "magnitude control"};
    for (const auto& lang : r.language_order) {
      if (!r.languages.count(lang) || r.languages.at(lang).results == 0) continue;
      detail::Series sv{lang, {}, {}};
      for (const char* k : {"suppress_related", "suppress_unrelated", "suppress_control",
                            "suppress_control_magnitude", "enhance_related", "enhance_unrelated",
                            "enhance_control", "enhance_control_magnitude"}) {
        const auto& s = r.languages.at(lang);
        sv.values.push_back(s.effects.count(k) && s.effects.at(k) ? 100.0 * *s.effects.at(k) : 0.0);
        std::optional<Interval> ci;
        if (s.effect_ci.count(k) && s.effect_ci.at(k))
          ci = Interval{100.0 * s.effect_ci.at(k)->lo, 100.0 * s.effect_ci.at(k)->hi};
        sv.errors.push_back(ci);
      }
      effects.push_back(sv);
    }
    o << "<h3>Suppress and enhance</h3>\n<p>Mean relative change of P(answer) over facts, in "
         "percent, with bootstrap 95 % confidence intervals.</p>\n"
      << detail::svg_bars(cats, effects, "change of P(answer) %");
    if (!r.overlaps.empty()) {
      std::vector<std::string> pairs;
      std::vector<double> jac;
      for (const auto& p : r.overlaps) {
        pairs.push_back(p.a + "–" + p.b);
        jac.push_back(p.mean_jaccard);
      }
      o << "<h3>Overlap across languages (LIKN)</h3>\n<p>Mean Jaccard index |N_a ∩ N_b| / "
           "|N_a ∪ N_b| of the knowledge neurons of the same fact in two languages.</p>\n"
        << detail::svg_bars(pairs, {{"mean Jaccard", jac, {}}}, "Jaccard", 480, 220);
    }
    if (!r.failures.empty()) {
      o << "<h3>Failures</h3>\n<table><tr><th>item</th><th>reason</th></tr>\n";
      for (const auto& [item, why] : r.failures)
        o << "<tr><td>" << detail::html_escape(item) << "</td><td>" << detail::html_escape(why)
          << "</td></tr>\n";
      o << "</table>\n";
    }
  }
  for (const auto& h : rep.heatmaps)
    o << "<h2>Attribution heatmap: " << detail::html_escape(h.fact) << " [" << h.language
      << "]</h2>\n<p>" << detail::html_escape(h.prompt) << " <b>" << detail::html_escape(h.answer)
      << "</b> (" << detail::html_escape(h.run) << ")</p>\n"
      << detail::svg_heatmap(h);
  o << "<h2>Run options</h2>\n";
  for (const auto& r : rep.runs)
    o << "<h3>" << detail::html_escape(r.label) << "</h3><pre>"
      << detail::html_escape(r.header.dump(1)) << "</pre>\n";
  o << "</body></html>\n";
  return o.str();
}

}  // namespace knprobe
