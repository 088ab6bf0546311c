// Reports: the summaries against hand counts on hand-written records (layer shares, effects, Succ,
// overlap, DKN, LIKN), the HTML is self-contained (inline SVG, no script, escaped text) and the
// Markdown carries the same tables.
#include "knprobe/report/report.hpp"

#include <boost/test/unit_test.hpp>

#include "support/paths.hpp"

using namespace knprobe;
using nlohmann::json;

namespace {

json result(int index, const std::string& lang, std::vector<std::pair<int, int>> neurons,
            double sup, double sup_unrel, double enh, double enh_unrel) {
  json n = json::array();
  for (auto [l, u] : neurons) n.push_back({{"layer", l}, {"unit", u}, {"score", 1.0}});
  return {{"record", "result"},
          {"index", index},
          {"fact", "f" + std::to_string(index)},
          {"relation", "r"},
          {"language", lang},
          {"p_answer", 0.5},
          {"prompt", "a <b> & c"},
          {"answer", " d"},
          {"neurons", n},
          {"suppress", {{"related", sup}, {"unrelated", sup_unrel}, {"control", 0.0}}},
          {"enhance", {{"related", enh}, {"unrelated", enh_unrel}, {"control", 0.0}}},
          {"max_completeness_delta", 0.01},
          {"top_by_layer", {{{5, 0.9}, {7, 0.1}}, {{1, 0.5}, {2, -0.1}}, {{0, 0.0}, {3, 0.0}}}}};
}

RunInput sample_run() {
  RunInput r;
  r.path = "/x/results.jsonl";
  r.header = {{"record", "header"},
              {"format", "knprobe-run/1"},
              {"facts", {{"count", 3}}},
              {"model", {{"layers", 3}, {"ffn_width", 8}}},
              {"options", {{"method", "amig"}, {"languages", {"en", "zh"}}}}};
  r.records = {result(0, "en", {{0, 5}, {1, 1}}, -0.8, -0.1, 0.4, 0.2),
               result(0, "zh", {{1, 1}, {2, 3}}, -0.6, -0.2, 0.2, 0.1),
               {{"record", "likn"},
                {"index", 0},
                {"fact", "f0"},
                {"neurons", {{1, 1}}},
                {"suppress", {{"en", {{"related", -0.5}}}}},
                {"enhance", {{"zh", {{"related", 0.1}}}}}},
               result(1, "en", {{1, 4}, {1, 6}}, -0.4, -0.1, 0.2, 0.2),
               {{"record", "likn"},
                {"index", 1},
                {"fact", "f1"},
                {"neurons", {{1, 4}}},
                {"suppress", {{"en", {{"related", -0.3}, {"unrelated", 0.1}}}}},
                {"enhance", {{"en", {{"related", 0.2}}}}}},
               {{"record", "failure"},
                {"index", 1},
                {"fact", "f1"},
                {"language", "zh"},
                {"reason", "bad <token>"}},
               {{"record", "screened_out"},
                {"index", 2},
                {"fact", "f2"},
                {"language", "en"},
                {"reason", "not top-1"}}};
  r.records[0]["dkn"] = {{"degenerate", {{{0, 5}, {1, 1}}}}, {"forward_passes", 30}};
  r.records[3]["dkn"] = {{"degenerate", json::array()}, {"forward_passes", 10}};
  return r;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(report_report)

BOOST_AUTO_TEST_CASE(summaries_match_hand_counts) {
  ReportInput in;
  in.runs = {sample_run()};
  const Report rep = build_report(in);
  BOOST_REQUIRE(rep.runs.size() == 1u);
  const auto& r = rep.runs[0];
  BOOST_TEST(r.label == "results.jsonl (amig)");
  const auto& en = r.languages.at("en");
  BOOST_TEST(en.results == 2u);
  BOOST_TEST(en.screened_out == 1u);
  BOOST_TEST(en.mean_neurons == 2.0);
  // en neurons: L0 ×1, L1 ×3 of 4
  BOOST_TEST(en.layer_share == std::vector<double>({0.25, 0.75, 0.0}),
             boost::test_tools::per_element());
  BOOST_TEST(*en.effects.at("suppress_related") == -0.6, boost::test_tools::tolerance(1e-12));
  // Succ = |0.3 / 0.2| + |−0.6 / −0.1| = 7.5
  BOOST_TEST(*en.succ == 7.5, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(en.dkn_facts == 2u);
  BOOST_TEST(en.dkn_with_sets == 1u);
  BOOST_TEST(en.dkn_passes == 40u);
  // 1 of 2 facts with DKN: the Wilson interval, not a bootstrap that could collapse to a point
  BOOST_REQUIRE(en.dkn_with_sets_ci);
  BOOST_TEST(en.dkn_with_sets_ci->lo == 0.0945, boost::test_tools::tolerance(1e-3));
  BOOST_TEST(en.dkn_with_sets_ci->hi == 0.9055, boost::test_tools::tolerance(1e-3));
  BOOST_REQUIRE(en.dkn_sets_ci);
  BOOST_REQUIRE(en.dkn_passes_ci);
  BOOST_REQUIRE(en.max_delta_ci);
  BOOST_TEST(en.max_delta_ci->lo <= en.mean_max_delta);
  BOOST_TEST(en.max_delta_ci->hi >= en.mean_max_delta);
  BOOST_TEST(r.languages.at("zh").failures == 1u);
  BOOST_REQUIRE(r.overlaps.size() == 1u);  // en–zh on fact 0: {L0.5, L1.1} vs {L1.1, L2.3}
  BOOST_TEST(r.overlaps[0].facts == 1u);
  BOOST_TEST(r.overlaps[0].mean_jaccard == 1.0 / 3.0, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(r.likn_facts == 2u);
  BOOST_TEST(r.mean_likn == 1.0);
  // every mean comes with its bootstrap interval once there are two facts (§10)
  BOOST_REQUIRE(en.neurons_ci);
  BOOST_REQUIRE(r.likn_ci);
  BOOST_REQUIRE(r.likn_effect_ci.at("en").at("suppress_related"));
  BOOST_TEST(en.neurons_ci->lo == 2.0);
  BOOST_TEST(en.neurons_ci->hi == 2.0);
  BOOST_TEST(!r.overlaps[0].jaccard_ci);  // one fact: no interval, not a zero-width one
  BOOST_TEST(r.likn_ci->lo == 1.0);
  const auto& likn = r.likn_effects.at("en");
  BOOST_TEST(*likn.at("suppress_related") == -0.4, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(r.likn_effect_ci.at("en").at("suppress_related")->lo == -0.5,
             boost::test_tools::tolerance(1e-12));
  BOOST_TEST(r.likn_effect_ci.at("en").at("suppress_related")->hi == -0.3,
             boost::test_tools::tolerance(1e-12));
  BOOST_TEST(*likn.at("suppress_unrelated") == 0.1, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(!r.likn_effect_ci.at("en").at("suppress_unrelated"));
  BOOST_TEST(!likn.at("enhance_control"));  // never measured: absent, not 0
  BOOST_TEST(r.likn_measured.at("en") == 2u);
  BOOST_TEST(r.likn_measured.at("zh") == 1u);  // enhanced only: counted, with no suppress value
  BOOST_TEST(!r.likn_effects.at("zh").at("suppress_related"));
  BOOST_REQUIRE(rep.heatmaps.size() == 2u);  // fact f0 in en and zh
  BOOST_TEST(rep.heatmaps[0].rows.size() == 3u);
  BOOST_TEST(rep.heatmaps[0].selected.count({0, 5}) == 1u);
}

BOOST_AUTO_TEST_CASE(html_is_self_contained_and_escaped) {
  ReportInput in;
  in.runs = {sample_run()};
  in.fact = "f1";
  in.factcheck = {{"summary",
                   {{"en",
                     {{"test",
                       {{"dkn", {{"precision", 0.5}, {"recall", 1.0}, {"f1", 0.667}}},
                        {"baseline", {{"precision", 1.0}}}}}}}}}};
  in.factcheck_path = "/y/factcheck.json";
  const Report rep = build_report(in);
  BOOST_TEST(rep.heatmaps.size() == 1u);  // f1 has an en result only
  const std::string html = render_html(rep);
  BOOST_TEST(html.rfind("<!DOCTYPE html>", 0) == 0u);
  BOOST_TEST(html.find("<script") == std::string::npos);
  BOOST_TEST(html.find("http://www.w3.org/2000/svg") != std::string::npos);
  BOOST_TEST(html.find("src=") == std::string::npos);  // nothing fetched
  BOOST_TEST(html.find("href=") == std::string::npos);
  BOOST_TEST(html.find("a &lt;b&gt; &amp; c") != std::string::npos);
  BOOST_TEST(html.find("bad &lt;token&gt;") != std::string::npos);
  BOOST_TEST(html.find("<b> & c") == std::string::npos);
  const std::string md = render_markdown(rep);
  // Succ with its bootstrap interval over the 2 facts (both resampled alike: 5, 7.5 or 10)
  BOOST_TEST(
      md.find("| en | 2 | 1 | 0 | 2.00 [2.00, 2.00] | 7.5 [5.0, 10.0] | 0.01 [0.01, 0.01] |") !=
          std::string::npos,
      md);
  // every effect mean with its 95 % interval; absent controls are n/a, never 0
  BOOST_TEST(md.find("| en | suppress | -60.0% [-80.0, -40.0] | -10.0% [-10.0, -10.0] | n/a | "
                     "+0.0% [+0.0, +0.0] | n/a |") != std::string::npos);
  // the effect chart has error bars and ticks at round values
  BOOST_TEST(html.find("95% CI -80 to -40") != std::string::npos);
  BOOST_TEST(html.find(">-100</text>") != std::string::npos);
  BOOST_TEST(html.find(">50</text>") != std::string::npos);
  BOOST_TEST(md.find("| en – zh | 1 | 1.00 | 0.333 |") != std::string::npos);
  // LIKN sets get the per-language sets' table: every field, its interval, n/a where unmeasured
  BOOST_TEST(md.find("LIKN (all languages): 1.00 [1.00, 1.00] neurons per fact, 2 of 2 facts") !=
             std::string::npos);
  BOOST_TEST(md.find("| en | 2 | suppress | -40.0% [-50.0, -30.0] | +10.0% | n/a | n/a | n/a |") !=
                 std::string::npos,
             md);
  BOOST_TEST(md.find("| en | test | DKN | 0.500 | 1.000 | 0.667 |") != std::string::npos);
  // shares with Wilson intervals, means with bootstrap intervals (a resample without any DKN set
  // has no mean set size: that interval is absent)
  BOOST_TEST(md.find("| en | 2 | 0 | 1 (0.500 [0.095, 0.905]) | 0.50 [0.00, 1.00] | 2.00 | 20 "
                     "[10, 30] |") != std::string::npos,
             md);
}

// docs/METHOD.md §10: two methods on the same facts are compared by paired per-item differences.
BOOST_AUTO_TEST_CASE(runs_of_the_same_facts_get_paired_differences) {
  ReportInput in;
  auto a = sample_run(), b = sample_run();
  a.header["facts"]["fingerprint"] = b.header["facts"]["fingerprint"] = "fnv1a64:1";
  b.path = "/x/ig.jsonl";
  b.records[0]["suppress"]["related"] = -0.5;  // f0 en: −0.8 vs −0.5; f1 en: −0.4 vs −0.4
  in.runs = {a, b};
  const std::string md = render_markdown(build_report(in));
  BOOST_TEST(md.find("### Paired differences: results.jsonl (amig) − ig.jsonl (amig)") !=
             std::string::npos);
  // per language, facts as the unit: en has f0 (−0.3) and f1 (0): mean −15 %, median −15 %
  BOOST_TEST(md.find("| en | suppress_related | 2 | -15.0% [-30.0%, +0.0%] | -15.0% |") !=
                 std::string::npos,
             md);
  BOOST_TEST(md.find("| zh | suppress_related | 1 | +0.0% | +0.0% |") != std::string::npos, md);
  // another fact list: no pairing
  b.header["facts"]["fingerprint"] = "fnv1a64:2";
  in.runs = {a, b};
  BOOST_TEST(render_markdown(build_report(in)).find("Paired differences") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(bad_input_is_refused) {
  BOOST_CHECK_THROW(build_report({}), ArgumentError);
  ReportInput in;
  in.runs = {sample_run()};
  in.fact = "no-such-fact";
  BOOST_CHECK_THROW(build_report(in), ArgumentError);
  in.fact.clear();
  in.runs[0].header = nullptr;
  BOOST_CHECK_THROW(build_report(in), ArgumentError);
}

BOOST_AUTO_TEST_CASE(foreign_or_damaged_records_are_refused) {
  auto expect = [](auto change, const std::string& words) {
    ReportInput in;
    in.runs = {sample_run()};
    change(in.runs[0]);
    try {
      (void)build_report(in);
      BOOST_FAIL("accepted: " + words);
    } catch (const FormatError& e) {
      BOOST_TEST(std::string(e.what()).find(words) != std::string::npos, e.what());
    }
  };
  expect(
      [](RunInput& r) {
        r.records.push_back({{"junk", 1}});
      },
      "results.jsonl:9: no string 'record'");
  expect([](RunInput& r) { r.records[1]["index"] = 3; }, "index: expected an integer in [0, 2]");
  expect([](RunInput& r) { r.records[1]["index"] = "0"; }, "index: expected an integer");
  expect([](RunInput& r) { r.records[0]["neurons"][0]["layer"] = -1; }, "neuron layer");
  expect([](RunInput& r) { r.records[0]["language"] = "fr"; }, "language 'fr'");
  expect([](RunInput& r) { r.records[0]["suppress"]["related"] = nullptr; }, "suppress.related");
  expect([](RunInput& r) { r.records[0]["record"] = 5; }, "no string 'record'");
  expect([](RunInput& r) { r.records[0]["top_by_layer"] = json::array(); }, "top_by_layer");
  expect([](RunInput& r) { r.records.push_back(r.records[0]); }, "a second record of fact index 0");
  expect([](RunInput& r) { r.header["format"] = "other/1"; }, "not a knprobe run results file");
  // Found by fuzz_results: a float where an int is read was undefined behaviour (UBSan).
  expect([](RunInput& r) { r.header["model"]["layers"] = 1.36673e+24; }, "model.layers");
  expect(
      [](RunInput& r) {
        r.records[0]["top_by_layer"][0] = json::array({json::array({1e30, 0.5})});
      },
      "top_by_layer unit");
  expect([](RunInput& r) { r.header["options"]["method"] = 5; }, "unexpected type");
  // A factcheck.json of the wrong shape names the key.
  ReportInput in;
  in.runs = {sample_run()};
  in.factcheck = {{"summary", {{"en", {{"test", {{"dkn", {{"f1", "high"}}}}}}}}}};
  in.factcheck_path = "fc.json";
  BOOST_TEST(testing::throws_with<FormatError>([&] { (void)build_report(in); },
                                               {"fc.json: summary.en.test.dkn.f1"}));
}

BOOST_AUTO_TEST_SUITE_END()
