#pragma once
// Summaries that make a results table evidence (docs/METHOD.md §10): for per-fact values x_1..x_n,
// the mean, the median and the mean of |x|, each with a 95 % bootstrap confidence interval
// (resample the facts with replacement R times, percentile interval), and paired differences of two
// methods on the same facts. Deterministic: the resampling stream is seeded by the options' seed
// and the statistic's name, so a table is reproduced exactly.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "knprobe/core/error.hpp"
#include "knprobe/core/rng.hpp"

namespace knprobe {

struct BootstrapOptions {
  int resamples = 2000;  ///< R
  double level = 0.95;   ///< coverage of the interval
  std::uint64_t seed = 42;
};

/// A percentile interval [lo, hi].
struct Interval {
  double lo = 0, hi = 0;
};

/// Summary of per-fact values; the intervals are absent when n < 2.
struct Summary {
  std::size_t n = 0;
  double mean = 0, median = 0, mean_abs = 0;
  std::optional<Interval> mean_ci, median_ci, mean_abs_ci;
};

namespace detail {

inline double mean_of_values(std::span<const double> v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}

/// Median (mean of the two middle values for even n); sorts `v`.
inline double median_of(std::vector<double>& v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const std::size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

/// The percentile interval of sorted bootstrap statistics: s[⌊αR/2⌋], s[⌈(1 − α/2)R⌉ − 1].
inline Interval percentile_interval(std::vector<double>& s, double level) {
  std::sort(s.begin(), s.end());
  const double a = 1 - level, R = static_cast<double>(s.size());
  const auto lo = static_cast<std::size_t>(std::floor(a / 2 * R));
  auto hi = static_cast<std::size_t>(std::ceil((1 - a / 2) * R));
  hi = std::clamp<std::size_t>(hi, 1, s.size()) - 1;
  return {s[std::min(lo, s.size() - 1)], s[hi]};
}

inline void check_bootstrap(const BootstrapOptions& o) {
  KNPROBE_REQUIRE(o.resamples >= 100 && o.resamples <= 1000000, ArgumentError,
                  "bootstrap: resamples = ", o.resamples, " must be in [100, 1000000]");
  KNPROBE_REQUIRE(o.level > 0.5 && o.level < 1, ArgumentError, "bootstrap: level = ", o.level,
                  " must be in (0.5, 1)");
}

}  // namespace detail

/// The Wilson score 95 % interval of a proportion k / n (k facts of n have some property):
/// (p̂ + z²/2n ± z·√(p̂(1 − p̂)/n + z²/4n²)) / (1 + z²/n), z = 1.959964. Unlike a percentile
/// bootstrap it does not collapse to [0, 0] or [1, 1] when every fact agrees. Absent for n = 0.
inline std::optional<Interval> wilson_interval(std::size_t k, std::size_t n) {
  KNPROBE_REQUIRE(k <= n, ArgumentError, "wilson_interval: ", k, " successes of ", n, " trials");
  if (n == 0) return std::nullopt;
  constexpr double z = 1.959963984540054;
  const double nn = static_cast<double>(n), p = static_cast<double>(k) / nn, z2 = z * z;
  const double centre = (p + z2 / (2 * nn)) / (1 + z2 / nn);
  const double half = z / (1 + z2 / nn) * std::sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn));
  return Interval{std::max(0.0, centre - half), std::min(1.0, centre + half)};
}

/// Mean, median and mean |x| of `values` (one per fact) with bootstrap percentile intervals.
/// Non-finite values are an error (they would poison every resample). `name` seeds the stream.
inline Summary summarize(std::span<const double> values, const BootstrapOptions& o = {},
                         std::string_view name = "") {
  detail::check_bootstrap(o);
  for (double x : values)
    KNPROBE_REQUIRE(std::isfinite(x), NumericError, "summary '", name,
                    "': a value is NaN or infinite");
  Summary s;
  s.n = values.size();
  if (s.n == 0) return s;
  std::vector<double> v(values.begin(), values.end()), a(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) a[i] = std::abs(v[i]);
  s.mean = detail::mean_of_values(v);
  s.mean_abs = detail::mean_of_values(a);
  std::vector<double> sorted = v;
  s.median = detail::median_of(sorted);
  if (s.n < 2) return s;
  Rng rng(o.seed ^ detail::fnv1a(name));
  const auto R = static_cast<std::size_t>(o.resamples);
  std::vector<double> means(R), medians(R), abs_means(R), draw(s.n);
  for (std::size_t r = 0; r < R; ++r) {
    double sum = 0, sum_abs = 0;
    for (std::size_t k = 0; k < s.n; ++k) {
      const auto i = static_cast<std::size_t>(rng.below(s.n));
      draw[k] = v[i];
      sum += v[i];
      sum_abs += a[i];
    }
    means[r] = sum / static_cast<double>(s.n);
    abs_means[r] = sum_abs / static_cast<double>(s.n);
    medians[r] = detail::median_of(draw);
  }
  s.mean_ci = detail::percentile_interval(means, o.level);
  s.median_ci = detail::percentile_interval(medians, o.level);
  s.mean_abs_ci = detail::percentile_interval(abs_means, o.level);
  return s;
}

/// Paired per-fact differences a_k − b_k over the keys both maps hold (e.g. "fact [language]"),
/// with the counts of keys only one side has (reported, not used).
struct PairedSummary {
  std::size_t only_a = 0, only_b = 0;
  Summary difference;
};

inline PairedSummary paired(const std::map<std::string, double>& a,
                            const std::map<std::string, double>& b, const BootstrapOptions& o = {},
                            std::string_view name = "") {
  PairedSummary p;
  std::vector<double> d;
  for (const auto& [k, x] : a) {
    const auto it = b.find(k);
    if (it == b.end())
      ++p.only_a;
    else
      d.push_back(x - it->second);
  }
  for (const auto& [k, _] : b) p.only_b += !a.count(k);
  p.difference = summarize(d, o, name);
  return p;
}

/// The ratio of two means, mean(x) / mean(y), over the same facts (pairs x_k, y_k), with a
/// bootstrap interval of the ratio; absent when n < 2 or a resampled mean(y) is 0. `unstable`
/// when the interval of mean(y) contains 0 (the ratio is then not evidence).
struct RatioSummary {
  std::size_t n = 0;
  std::optional<double> ratio;
  std::optional<Interval> ci;
  bool unstable = true;
};

inline RatioSummary ratio_of_means(std::span<const double> x, std::span<const double> y,
                                   const BootstrapOptions& o = {}, std::string_view name = "") {
  detail::check_bootstrap(o);
  KNPROBE_REQUIRE(x.size() == y.size(), ArgumentError, "ratio_of_means: ", x.size(), " vs ",
                  y.size(), " values");
  RatioSummary r;
  r.n = x.size();
  if (r.n == 0) return r;
  const double my = detail::mean_of_values(y);
  if (my != 0) r.ratio = detail::mean_of_values(x) / my;
  if (r.n < 2) return r;
  Rng rng(o.seed ^ detail::fnv1a(name));
  std::vector<double> ratios, den;
  for (int k = 0; k < o.resamples; ++k) {
    double sx = 0, sy = 0;
    for (std::size_t i = 0; i < r.n; ++i) {
      const auto j = static_cast<std::size_t>(rng.below(r.n));
      sx += x[j];
      sy += y[j];
    }
    den.push_back(sy / static_cast<double>(r.n));
    if (sy == 0) return r;  // a resample with mean(y) = 0: no interval
    ratios.push_back(sx / sy);
  }
  r.ci = detail::percentile_interval(ratios, o.level);
  const Interval dci = detail::percentile_interval(den, o.level);
  r.unstable = dci.lo <= 0 && dci.hi >= 0;
  return r;
}

/// Succ = |mean(E_rel) / mean(E_unrel)| + |mean(S_rel) / mean(S_unrel)| (docs/METHOD.md §8) over
/// the same facts (k-th entries of the four vectors belong to fact k), with a bootstrap interval
/// that resamples facts jointly; `unstable` when the interval of mean(E_unrel) or of mean(S_unrel)
/// contains 0 (Succ then divides by noise and is not evidence). Absent value when a denominator
/// is 0; no interval when n < 2 or a resampled denominator is 0.
inline RatioSummary succ_summary(std::span<const double> s_rel, std::span<const double> s_unrel,
                                 std::span<const double> e_rel, std::span<const double> e_unrel,
                                 const BootstrapOptions& o = {}, std::string_view name = "succ") {
  detail::check_bootstrap(o);
  const std::size_t n = s_rel.size();
  KNPROBE_REQUIRE(s_unrel.size() == n && e_rel.size() == n && e_unrel.size() == n, ArgumentError,
                  "succ_summary: the four effect lists must hold one value per fact");
  RatioSummary r;
  r.n = n;
  if (n == 0) return r;
  auto succ = [](double sr, double su, double er, double eu) -> std::optional<double> {
    if (su == 0 || eu == 0) return std::nullopt;
    return std::abs(er / eu) + std::abs(sr / su);
  };
  const double N = static_cast<double>(n);
  r.ratio = succ(detail::mean_of_values(s_rel), detail::mean_of_values(s_unrel),
                 detail::mean_of_values(e_rel), detail::mean_of_values(e_unrel));
  if (n < 2) return r;
  Rng rng(o.seed ^ detail::fnv1a(name));
  std::vector<double> values, su_means, eu_means;
  bool complete = true;
  for (int k = 0; k < o.resamples; ++k) {
    double a = 0, b = 0, c = 0, d = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const auto j = static_cast<std::size_t>(rng.below(n));
      a += s_rel[j], b += s_unrel[j], c += e_rel[j], d += e_unrel[j];
    }
    su_means.push_back(b / N);
    eu_means.push_back(d / N);
    if (const auto v = succ(a, b, c, d))
      values.push_back(*v);
    else
      complete = false;
  }
  if (complete) r.ci = detail::percentile_interval(values, o.level);
  const Interval si = detail::percentile_interval(su_means, o.level);
  const Interval ei = detail::percentile_interval(eu_means, o.level);
  r.unstable = (si.lo <= 0 && si.hi >= 0) || (ei.lo <= 0 && ei.hi >= 0);
  return r;
}

/// {"n", "mean", "mean_ci": [lo, hi], "median", "median_ci", "mean_abs", "mean_abs_ci"}; the
/// intervals are null when n < 2, everything but n is null when n = 0.
inline nlohmann::json to_json(const Summary& s) {
  auto ci = [](const std::optional<Interval>& i) {
    return i ? nlohmann::json{i->lo, i->hi} : nlohmann::json(nullptr);
  };
  if (s.n == 0)
    return {{"n", 0},
            {"mean", nullptr},
            {"mean_ci", nullptr},
            {"median", nullptr},
            {"median_ci", nullptr},
            {"mean_abs", nullptr},
            {"mean_abs_ci", nullptr}};
  return {{"n", s.n},
          {"mean", s.mean},
          {"mean_ci", ci(s.mean_ci)},
          {"median", s.median},
          {"median_ci", ci(s.median_ci)},
          {"mean_abs", s.mean_abs},
          {"mean_abs_ci", ci(s.mean_abs_ci)}};
}

inline nlohmann::json to_json(const PairedSummary& p) {
  auto j = to_json(p.difference);
  j["only_first"] = p.only_a;
  j["only_second"] = p.only_b;
  return j;
}

inline nlohmann::json to_json(const RatioSummary& r) {
  return {{"n", r.n},
          {"ratio", r.ratio ? nlohmann::json(*r.ratio) : nlohmann::json(nullptr)},
          {"ci", r.ci ? nlohmann::json{r.ci->lo, r.ci->hi} : nlohmann::json(nullptr)},
          {"unstable", r.unstable}};
}

}  // namespace knprobe
