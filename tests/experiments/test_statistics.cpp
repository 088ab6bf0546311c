// experiments/statistics.hpp: means, medians and mean |x| with bootstrap percentile intervals
// against hand values, determinism for a seed, coverage of the true mean on simulated data,
// paired differences, Succ with its interval and the "unstable" flag, and bad input.
#include "knprobe/experiments/statistics.hpp"

#include <boost/test/unit_test.hpp>
#include <random>

using namespace knprobe;

BOOST_AUTO_TEST_SUITE(experiments_statistics)

BOOST_AUTO_TEST_CASE(summary_matches_hand_values) {
  const std::vector<double> v{-2, 1, 3, 4, 9};
  const auto s = summarize(v, {}, "v");
  BOOST_TEST(s.n == 5u);
  BOOST_TEST(s.mean == 3.0, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(s.median == 3.0);
  BOOST_TEST(s.mean_abs == 19.0 / 5, boost::test_tools::tolerance(1e-12));
  BOOST_REQUIRE(s.mean_ci.has_value());
  BOOST_TEST(s.mean_ci->lo <= s.mean);
  BOOST_TEST(s.mean_ci->hi >= s.mean);
  BOOST_TEST(s.mean_ci->lo >= -2.0);  // a mean of resampled values stays within their range
  BOOST_TEST(s.mean_ci->hi <= 9.0);
  // the same seed and name give the same interval; another name another stream
  const auto again = summarize(v, {}, "v");
  BOOST_TEST(again.mean_ci->lo == s.mean_ci->lo);
  BOOST_TEST(again.mean_ci->hi == s.mean_ci->hi);
  // even n: the median is the mean of the middle two
  BOOST_TEST(summarize(std::vector<double>{1, 2, 4, 10}).median == 3.0);
  // one value: no interval; none: nothing, and JSON says so with nulls (never a 0 mean)
  BOOST_TEST(!summarize(std::vector<double>{1.5}).mean_ci.has_value());
  const auto empty = to_json(summarize(std::vector<double>{}));
  BOOST_TEST(empty["n"] == 0);
  BOOST_TEST(empty["mean"].is_null());
}

BOOST_AUTO_TEST_CASE(intervals_cover_the_true_mean_about_95_percent_of_the_time) {
  // 200 samples of n = 40 from N(1, 2²): the percentile interval of the mean should contain 1 in
  // roughly 95 % of them (binomial sd ≈ 1.5 %; accept 88–99 %).
  std::mt19937_64 gen(7);
  std::normal_distribution<double> normal(1.0, 2.0);
  BootstrapOptions o;
  o.resamples = 500;
  int covered = 0;
  for (int rep = 0; rep < 200; ++rep) {
    std::vector<double> x(40);
    for (auto& v : x) v = normal(gen);
    o.seed = static_cast<std::uint64_t>(rep);
    const auto s = summarize(x, o, "cov");
    covered += s.mean_ci->lo <= 1.0 && 1.0 <= s.mean_ci->hi;
  }
  BOOST_TEST(covered >= 176, covered << " of 200");
  BOOST_TEST(covered <= 198, covered << " of 200");
}

BOOST_AUTO_TEST_CASE(paired_differences_use_the_common_keys) {
  const std::map<std::string, double> a{{"f1", 0.5}, {"f2", 0.7}, {"f3", 0.9}, {"only_a", 1.0}};
  const std::map<std::string, double> b{{"f1", 0.4}, {"f2", 0.5}, {"f3", 0.6}, {"only_b", 0.0}};
  const auto p = paired(a, b, {}, "amig-ig");
  BOOST_TEST(p.only_a == 1u);
  BOOST_TEST(p.only_b == 1u);
  BOOST_TEST(p.difference.n == 3u);
  BOOST_TEST(p.difference.mean == 0.2, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(p.difference.mean_ci->lo > 0.0);  // every pair is positive
}

BOOST_AUTO_TEST_CASE(succ_is_flagged_unstable_when_the_unrelated_effect_straddles_zero) {
  // related effects clearly negative; unrelated ones tiny and of both signs: Succ is huge and
  // means nothing (the AMIG "Succ 291" of docs/results.md) — the flag says so.
  const std::vector<double> s_rel{-0.9, -0.8, -0.95, -0.7, -0.85, -0.9};
  const std::vector<double> s_unrel{0.004, -0.006, 0.002, -0.003, 0.001, -0.001};
  const std::vector<double> e_rel{0.5, 0.4, 0.6, 0.3, 0.5, 0.45};
  const std::vector<double> e_unrel{0.01, -0.02, 0.015, -0.01, 0.02, -0.012};
  const auto u = succ_summary(s_rel, s_unrel, e_rel, e_unrel);
  BOOST_TEST(u.unstable);
  // clearly non-zero unrelated effects: a stable Succ with an interval around its value
  const std::vector<double> su{-0.2, -0.25, -0.15, -0.2, -0.3, -0.22};
  const std::vector<double> eu{0.1, 0.12, 0.08, 0.1, 0.15, 0.09};
  const auto st = succ_summary(s_rel, su, e_rel, eu);
  BOOST_TEST(!st.unstable);
  BOOST_REQUIRE(st.ratio.has_value());
  BOOST_REQUIRE(st.ci.has_value());
  BOOST_TEST(st.ci->lo <= *st.ratio);
  BOOST_TEST(st.ci->hi >= *st.ratio);
}

BOOST_AUTO_TEST_CASE(wilson_interval_matches_published_values) {
  // Newcombe (1998), Table I: 0/10 → [0, 0.2775], 5/10 → [0.2366, 0.7634], 81/263 →
  // [0.2553, 0.3662]
  using boost::test_tools::tolerance;
  BOOST_TEST(wilson_interval(0, 10)->lo <= 1e-12);
  BOOST_TEST(wilson_interval(0, 10)->hi == 0.2775, tolerance(2e-4));
  BOOST_TEST(wilson_interval(5, 10)->lo == 0.2366, tolerance(2e-4));
  BOOST_TEST(wilson_interval(5, 10)->hi == 0.7634, tolerance(2e-4));
  BOOST_TEST(wilson_interval(81, 263)->lo == 0.2553, tolerance(2e-4));
  BOOST_TEST(wilson_interval(81, 263)->hi == 0.3662, tolerance(2e-4));
  BOOST_TEST(wilson_interval(10, 10)->hi == 1.0, tolerance(1e-12));
  BOOST_TEST(!wilson_interval(0, 0));
  BOOST_CHECK_THROW(wilson_interval(3, 2), ArgumentError);
}

BOOST_AUTO_TEST_CASE(bad_input_is_refused) {
  BOOST_CHECK_THROW(summarize(std::vector<double>{1, std::nan(""), 2}), NumericError);
  BootstrapOptions o;
  o.resamples = 10;
  BOOST_CHECK_THROW(summarize(std::vector<double>{1, 2}, o), ArgumentError);
  o = {};
  o.level = 1.0;
  BOOST_CHECK_THROW(summarize(std::vector<double>{1, 2}, o), ArgumentError);
  BOOST_CHECK_THROW(ratio_of_means(std::vector<double>{1}, std::vector<double>{1, 2}),
                    ArgumentError);
}

BOOST_AUTO_TEST_SUITE_END()
