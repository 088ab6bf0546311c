// The results-file schema (run_records.hpp): every record a real run writes reads back into a
// typed RunRecord with the values it was written with; the header decides resuming except for its
// informative keys; damaged fields are named.
#include "knprobe/experiments/run_records.hpp"

#include <boost/test/unit_test.hpp>

#include "knprobe/data/facts.hpp"
#include "knprobe/experiments/run.hpp"
#include "knprobe/model/llama.hpp"
#include "knprobe/tokenize/llama2c_tokenizer.hpp"
#include "support/paths.hpp"

using namespace knprobe;
using nlohmann::json;

namespace run_records_test {

struct Stories {
  LlamaModel<float> model = LlamaModel<float>::load(testing::stories_dir() / "stories260K.bin");
  Llama2cTokenizer tok{testing::stories_dir() / "tok512.bin", model.vocab_size()};
  KnowledgeProbe<LlamaModel<float>> probe{model, tok};
  std::vector<Fact> facts =
      read_facts(testing::data_dir() / "facts" / "stories_two_phrasings.jsonl").facts;
};

}  // namespace run_records_test

BOOST_AUTO_TEST_SUITE(experiments_run_records)

BOOST_AUTO_TEST_CASE(records_of_a_real_run_read_back_typed) {
  const run_records_test::Stories s;
  testing::TempDir d;
  const auto header =
      make_run_header(s.model, "hash:x", s.facts, {{"languages", {"a", "b"}}}, {{"facts", "f"}});
  BOOST_TEST(header["format"] == "knprobe-run/1");
  BOOST_TEST(header["model"]["layers"] == s.model.num_layers());
  BOOST_TEST(header["model"]["objective"] == "causal_lm");
  BOOST_TEST(header["facts"]["fingerprint"] == facts_fingerprint(s.facts));
  RunOptions o;
  o.localize.languages = {"a", "b"};
  o.localize.thresholds = {{"a", 0.3}, {"b", 0.3}};
  o.localize.attribution.steps = 4;
  o.dkn = DknOptions{};
  o.dkn->top = 6;
  o.top_per_layer = 3;
  {
    io::ResultsFile f(d.path() / "r.jsonl", header, run_header_informative_keys());
    run_dataset(s.probe, s.facts, f, o);
  }
  // The paths are informative: a file written with other paths is resumed.
  auto moved = header;
  moved["paths"] = {{"facts", "elsewhere"}};
  const io::ResultsFile again(d.path() / "r.jsonl", moved, run_header_informative_keys());
  const auto& raw = again.records();
  const auto typed = parse_run_records(again.header(), raw, "r.jsonl", &s.facts);
  BOOST_REQUIRE(typed.size() == raw.size());
  std::size_t results = 0, likn = 0;
  for (std::size_t k = 0; k < raw.size(); ++k) {
    const json& j = raw[k];
    const RunRecord& r = typed[k];
    BOOST_TEST(r.index == j["index"].get<long long>());
    BOOST_TEST(r.fact == j["fact"].get<std::string>());
    BOOST_TEST(r.relation == j["relation"].get<std::string>());
    if (j["record"] == "likn") {
      ++likn;
      BOOST_TEST((r.kind == RunRecordKind::likn));
      BOOST_TEST(r.language.empty());
      BOOST_TEST(r.neurons.size() == j["neurons"].size());
      BOOST_TEST(r.likn_suppress.size() == (j.contains("suppress") ? j["suppress"].size() : 0u));
      for (const auto& [lang, e] : r.likn_suppress)
        BOOST_TEST(e.related.value_or(-9) == j["suppress"].at(lang).value("related", -9.0));
      continue;
    }
    BOOST_TEST(r.language == j["language"].get<std::string>());
    if (j["record"] != "result") continue;
    ++results;
    BOOST_TEST((r.kind == RunRecordKind::result));
    BOOST_TEST(r.prompt == j["prompt"].get<std::string>());
    BOOST_TEST(r.p_answer == j["p_answer"].get<double>());
    BOOST_REQUIRE(r.neurons.size() == j["neurons"].size());
    for (std::size_t n = 0; n < r.neurons.size(); ++n) {
      BOOST_TEST(r.neurons[n].first.layer == j["neurons"][n]["layer"].get<int>());
      BOOST_TEST(r.neurons[n].first.unit == j["neurons"][n]["unit"].get<int>());
      BOOST_TEST(r.neurons[n].second == j["neurons"][n]["score"].get<double>());
    }
    for (const auto& [name, v] : r.suppress.fields())
      BOOST_TEST(v->has_value() == j["suppress"].contains(name), name);
    BOOST_TEST(r.suppress.related.value_or(-9) == j["suppress"].value("related", -9.0));
    BOOST_TEST(r.enhance.unrelated_abs.value_or(-9) == j["enhance"].value("unrelated_abs", -9.0));
    BOOST_TEST(r.suppress.unrelated_facts.size() ==
               j["suppress"].value("unrelated_facts", json::array()).size());
    BOOST_TEST(r.suppress.notes.size() == j["suppress"].value("notes", json::array()).size());
    BOOST_REQUIRE(r.dkn.has_value());
    BOOST_TEST(r.dkn->degenerate.size() == j["dkn"]["degenerate"].size());
    BOOST_TEST(r.dkn->searched == !j["dkn"].contains("note"));
    BOOST_TEST(r.top_by_layer.size() == static_cast<std::size_t>(s.model.num_layers()));
    BOOST_TEST(r.top_by_layer[0].size() == 3u);
  }
  BOOST_TEST(results > 0u);
  BOOST_TEST(likn > 0u);
}

BOOST_AUTO_TEST_CASE(damaged_fields_are_named) {
  const json header{{"format", "knprobe-run/1"},
                    {"facts", {{"count", 2}}},
                    {"model", {{"layers", 2}, {"ffn_width", 8}}},
                    {"options", {{"languages", {"en"}}}}};
  const json good{{"record", "result"},
                  {"index", 1},
                  {"fact", "f1"},
                  {"relation", "P1"},
                  {"language", "en"},
                  {"p_answer", 0.5},
                  {"neurons", {{{"layer", 1}, {"unit", 7}, {"score", 0.25}}}},
                  {"suppress", {{"related", -0.5}, {"notes", {"control: none"}}}},
                  {"dkn", {{"degenerate", {{{0, 1}, {1, 2}}}}, {"forward_passes", 4}}}};
  const auto r = parse_run_record(good, header, "x:2");
  BOOST_TEST(r.neurons[0].second == 0.25);
  BOOST_TEST(*r.suppress.related == -0.5);
  BOOST_TEST(r.suppress.notes.size() == 1u);
  BOOST_TEST(!r.suppress.control.has_value());
  BOOST_TEST(r.dkn->degenerate[0].size() == 2u);
  BOOST_TEST(r.dkn->forward_passes == 4u);
  auto expect = [&](const std::string& key, const json& value, const std::string& words) {
    json bad = good;
    bad[key] = value;
    try {
      (void)parse_run_record(bad, header, "x:2");
      BOOST_FAIL("accepted " + key);
    } catch (const FormatError& e) {
      BOOST_TEST(std::string(e.what()).find(words) != std::string::npos, e.what());
    }
  };
  expect("neurons", {{{"layer", 2}, {"unit", 0}}}, "x:2: neuron layer");
  expect("suppress", {{"unrelated", "big"}}, "x:2: suppress.unrelated");
  expect("dkn", {{"degenerate", {{{0, 99}}}}}, "neuron unit");
  expect("prompt", 5, "x:2: prompt");
  expect("index", 2, "index");
}

BOOST_AUTO_TEST_SUITE_END()
