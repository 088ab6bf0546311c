// Resumable dataset runs on the real stories260K model: an interrupted and resumed run equals an
// uninterrupted one record for record, two shards merge into the single-process result, failures
// and screening are recorded per item, bad options are refused, and refining a finished run
// against generic neurons gives localize()'s refined sets and effects.
#include "knprobe/experiments/run.hpp"

#include <boost/test/unit_test.hpp>
#include <fstream>

#include "knprobe/data/facts.hpp"
#include "knprobe/model/llama.hpp"
#include "knprobe/tokenize/llama2c_tokenizer.hpp"
#include "support/paths.hpp"

using namespace knprobe;
using nlohmann::json;

namespace {

struct StoriesFixture {
  LlamaModel<float> model = LlamaModel<float>::load(testing::stories_dir() / "stories260K.bin");
  Llama2cTokenizer tok{testing::stories_dir() / "tok512.bin", model.vocab_size()};
  KnowledgeProbe<LlamaModel<float>> probe{model, tok};
  std::vector<Fact> facts;
  StoriesFixture() {
    facts = read_facts(testing::data_dir() / "facts" / "stories_two_phrasings.jsonl").facts;
    facts.push_back({"only_a", "place", {{"a", "Tim went to the"}}, {{"a", " park"}}});
  }
};

RunOptions options() {
  RunOptions o;
  o.localize.languages = {"a", "b"};
  o.localize.thresholds = {{"a", 0.3}, {"b", 0.3}};
  o.localize.attribution.steps = 4;
  o.dkn = DknOptions{};
  o.dkn->top = 6;
  o.top_per_layer = 3;
  return o;
}

const json kHeader{{"format", "knprobe-run/1"},
                   {"facts", {{"count", 4}}},
                   {"model", {{"layers", 5}, {"ffn_width", 172}}},
                   {"options", {{"languages", {"a", "b"}}}}};

std::vector<json> complete_run(const StoriesFixture& s, const std::filesystem::path& p,
                               const RunOptions& o) {
  io::ResultsFile f(p, kHeader);
  const auto sum = run_dataset(s.probe, s.facts, f, o);
  BOOST_TEST(!sum.stopped);
  return canonical_records({io::read_results(p)});
}

/// A finished run at `p` as a refinement reads it: the header and the canonical records.
io::ResultsContent finished_run(const StoriesFixture& s, const std::filesystem::path& p,
                                const RunOptions& o) {
  auto recs = complete_run(s, p, o);
  return {io::read_results(p).header, std::move(recs), {}, 0};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(experiments_run)

BOOST_AUTO_TEST_CASE(every_item_gets_one_record) {
  const StoriesFixture s;
  testing::TempDir d;
  const auto recs = complete_run(s, d.path() / "full.jsonl", options());
  // 4 facts × (2 languages + LIKN)
  BOOST_REQUIRE(recs.size() == 12u);
  std::map<std::string, int> kinds;
  for (const auto& r : recs) ++kinds[r["record"].get<std::string>()];
  BOOST_TEST(kinds["result"] == 7);
  BOOST_TEST(kinds["failure"] == 1);  // only_a has no 'b' prompt
  BOOST_TEST(kinds["likn"] == 4);
  const auto& fail = recs[10];
  BOOST_TEST(fail["fact"] == "only_a");
  BOOST_TEST(fail["language"] == "b");
  BOOST_TEST(fail["reason"].get<std::string>().find("no prompt or answer") != std::string::npos);
  BOOST_TEST(recs[11]["reason"] == "not every language has a result");
  const auto& first = recs[0];
  BOOST_TEST(first["fact"] == "lily");
  BOOST_TEST(first["language"] == "a");
  BOOST_TEST(first["top_by_layer"].size() == 5u);     // stories260K: 5 layers
  BOOST_TEST(first["top_by_layer"][0].size() == 3u);  // top 3 units each
  BOOST_TEST(first.contains("dkn"));
  BOOST_TEST(first["suppress"].contains("control"));
  BOOST_TEST(recs[2]["record"] == "likn");
  BOOST_TEST(recs[2]["languages"] == json({"a", "b"}));
}

BOOST_AUTO_TEST_CASE(an_interrupted_run_resumes_to_the_same_records) {
  const StoriesFixture s;
  testing::TempDir d;
  const auto full = complete_run(s, d.path() / "full.jsonl", options());
  std::atomic<bool> stop{false};
  auto o = options();
  o.stop = &stop;
  o.progress = [&](std::size_t done, std::size_t, const std::string&) {
    if (done == 4) stop = true;  // stop once item 5 is under way: it completes, then we return
  };
  const auto p = d.path() / "part.jsonl";
  {
    io::ResultsFile f(p, kHeader);
    const auto sum = run_dataset(s.probe, s.facts, f, o);
    BOOST_TEST(sum.stopped);
    BOOST_TEST(sum.computed == 5u);
  }
  stop = false;
  o.progress = nullptr;
  {
    io::ResultsFile f(p, kHeader);
    BOOST_TEST(f.records().size() == 5u);
    const auto sum = run_dataset(s.probe, s.facts, f, o);
    BOOST_TEST(sum.resumed == 5u);
    BOOST_TEST(sum.computed == 7u);
    BOOST_TEST(!sum.stopped);
  }
  BOOST_TEST(canonical_records({io::read_results(p)}) == full);
  // once complete, a rerun computes nothing
  io::ResultsFile again(p, kHeader);
  BOOST_TEST(run_dataset(s.probe, s.facts, again, o).computed == 0u);
}

BOOST_AUTO_TEST_CASE(shards_merge_into_the_single_process_result) {
  const StoriesFixture s;
  testing::TempDir d;
  const auto full = complete_run(s, d.path() / "full.jsonl", options());
  std::vector<io::ResultsContent> parts;
  for (std::size_t r = 0; r < 2; ++r) {
    auto o = options();
    o.shard_rank = r;
    o.shard_count = 2;
    auto h = kHeader;
    h["shard"] = {{"rank", r}, {"count", 2}};
    const auto p = d.path() / ("part" + std::to_string(r));
    io::ResultsFile f(p, h);
    BOOST_TEST(run_dataset(s.probe, s.facts, f, o).items == 6u);
    parts.push_back(io::read_results(p));
  }
  BOOST_TEST(parts[0].records.front()["fact"] == "lily");  // facts 0 and 2 on rank 0
  BOOST_TEST(parts[1].records.front()["fact"] == "tim");
  BOOST_TEST(canonical_records(parts) == full);
  // shards of another run, or two different records for one item, are refused
  auto other = parts;
  other[1].header["options"]["languages"] = {"a"};
  BOOST_CHECK_THROW(canonical_records(other), FormatError);
  other = parts;
  other[1].records.push_back(parts[0].records.front());
  other[1].records.back()["p_answer"] = 0.5;
  BOOST_CHECK_THROW(canonical_records(other), FormatError);
}

BOOST_AUTO_TEST_CASE(refining_a_finished_run_equals_localize_with_drop_generic) {
  const StoriesFixture s;
  testing::TempDir d;
  const auto o = options();
  const auto run = finished_run(s, d.path() / "run.jsonl", o);
  const double F = 0.3;
  const auto q = d.path() / "refined.jsonl";
  const auto header = refined_run_header(run.header, run.records, F);
  BOOST_TEST(header["options"]["drop_generic"] == F);
  BOOST_TEST(header["options"]["dkn"].is_null());
  // interrupted after 5 items, then resumed
  std::atomic<bool> stop{false};
  auto oi = o;
  oi.stop = &stop;
  oi.progress = [&](std::size_t done, std::size_t, const std::string&) {
    if (done == 4) stop = true;
  };
  {
    io::ResultsFile f(q, header);
    const auto sum = refine_run(s.probe, s.facts, run, F, f, oi);
    BOOST_TEST(sum.stopped);
    BOOST_TEST(sum.computed == 5u);
  }
  {
    io::ResultsFile f(q, header);
    const auto sum = refine_run(s.probe, s.facts, run, F, f, o);
    BOOST_TEST(sum.resumed == 5u);
    BOOST_TEST(sum.computed == 7u);
  }
  const auto refined = canonical_records({io::read_results(q)});
  BOOST_REQUIRE(refined.size() == run.records.size());

  // the same sets and effects as localize() refining in memory
  LocalizeOptions lo = o.localize;
  lo.generic_fraction = F;
  const auto rep = localize(s.probe, s.facts, lo);
  std::size_t results = 0, dropped = 0, likns = 0;
  for (const auto& r : refined) {
    const auto fr = std::find_if(rep.facts.begin(), rep.facts.end(),
                                 [&](const FactResult& f) { return f.id == r["fact"]; });
    if (r["record"] == "result") {
      BOOST_REQUIRE(fr != rep.facts.end());
      const auto j = to_json(fr->languages.at(r["language"].get<std::string>()));
      for (const char* key : {"neurons", "dropped_generic", "suppress", "enhance", "p_answer"})
        BOOST_TEST(r[key] == j[key], key << " of " << r["fact"] << " " << r["language"]);
      BOOST_TEST(!r.contains("dkn"));
      BOOST_TEST(r.contains("completeness"));
      dropped += r["dropped_generic"].size();
      ++results;
    } else if (r["record"] == "likn" && !r.contains("reason")) {
      BOOST_REQUIRE(fr != rep.facts.end());
      BOOST_TEST(r["neurons"] == detail::neurons_json(fr->likn));
      for (const auto& [lang, e] : fr->likn_suppress)
        BOOST_TEST(r["suppress"][lang] == detail::effects_json(e));
      ++likns;
    }
  }
  BOOST_TEST(results == 7u);
  BOOST_TEST(dropped > 0u);     // the rule removed neurons on these facts: the test is not vacuous
  BOOST_TEST(likns + 1 == 4u);  // only_a has no LIKN

  // a rerun computes nothing; a file of another fraction or another run is not resumed
  {
    io::ResultsFile f(q, header);
    BOOST_TEST(refine_run(s.probe, s.facts, run, F, f, o).computed == 0u);
  }
  BOOST_CHECK_THROW(io::ResultsFile(q, refined_run_header(run.header, run.records, 0.5)),
                    ResumeError);
  auto other = run;
  other.records[0]["p_answer"] = 0.25;
  BOOST_CHECK_THROW(io::ResultsFile(q, refined_run_header(other.header, other.records, F)),
                    ResumeError);
  // an unfinished run, a bad fraction, a shard instead of the merged run: refused
  io::ResultsFile f2(d.path() / "r2.jsonl", header);
  auto part = run;
  part.records.pop_back();
  BOOST_CHECK_THROW(refine_run(s.probe, s.facts, part, F, f2, o), ArgumentError);
  BOOST_CHECK_THROW(refine_run(s.probe, s.facts, run, 0.0, f2, o), ArgumentError);
  BOOST_CHECK_THROW(refine_run(s.probe, s.facts, run, 1.0, f2, o), ArgumentError);
  auto shard = run;
  shard.header["shard"] = {{"rank", 0}, {"count", 1}};
  BOOST_CHECK_THROW(refine_run(s.probe, s.facts, shard, F, f2, o), ArgumentError);
  // a refinement is not refined again; a verified run is refined with verification
  const io::ResultsContent twice{header, refined, {}, 0};
  BOOST_CHECK_THROW(refine_run(s.probe, s.facts, twice, F, f2, o), ArgumentError);
  auto unverified = o;
  unverified.localize.verify = false;
  BOOST_CHECK_THROW(refine_run(s.probe, s.facts, run, F, f2, unverified), ArgumentError);
  BOOST_TEST(f2.records().empty());
}

// The refinement's control: from each set as many neurons as the rule drops, drawn from the
// non-generic ones; the sets are as large as the refined ones, the draw is seeded.
BOOST_AUTO_TEST_CASE(random_drop_control_matches_the_refined_sizes) {
  const StoriesFixture s;
  testing::TempDir d;
  const auto o = options();
  const auto run = finished_run(s, d.path() / "run.jsonl", o);
  const double F = 0.3;
  auto refine = [&](const char* name, RefineRule rule) {
    const auto q = d.path() / name;
    io::ResultsFile f(q, refined_run_header(run.header, run.records, F, rule));
    refine_run(s.probe, s.facts, run, F, f, o, rule);
    return canonical_records({io::read_results(q)});
  };
  const auto refined = refine("refined.jsonl", RefineRule::generic);
  const auto control = refine("control.jsonl", RefineRule::random_drop);
  BOOST_TEST(io::read_results(d.path() / "control.jsonl").header["options"]["drop_rule"] ==
             "random");
  BOOST_REQUIRE(control.size() == refined.size());
  std::size_t matched = 0, impossible = 0, moved = 0;
  for (std::size_t k = 0; k < control.size(); ++k) {
    const auto &c = control[k], &r = refined[k];
    if (r["record"] != "result") continue;
    if (c["record"] == "failure") {  // fewer non-generic neurons than generic ones
      BOOST_TEST(c["reason"].get<std::string>().find("random-drop control impossible") !=
                 std::string::npos);
      BOOST_TEST(r["neurons"].size() < r["dropped_generic"].size());
      ++impossible;
      continue;
    }
    BOOST_REQUIRE(c["record"] == "result");
    BOOST_TEST(c["neurons"].size() == r["neurons"].size());
    BOOST_TEST(c["dropped_random"].size() == r["dropped_generic"].size());
    for (const auto& n : c["dropped_random"]) {  // never a generic neuron
      const bool generic = std::find(r["dropped_generic"].begin(), r["dropped_generic"].end(), n) !=
                           r["dropped_generic"].end();
      BOOST_TEST(!generic);
    }
    moved += c["dropped_random"].size();
    ++matched;
  }
  BOOST_TEST(matched + impossible == 7u);
  BOOST_TEST(moved > 0u);  // some set lost random neurons: the control did something
  BOOST_TEST(refine("again.jsonl", RefineRule::random_drop) == control);  // seeded
}

BOOST_AUTO_TEST_CASE(screening_is_recorded_per_item) {
  const StoriesFixture s;
  testing::TempDir d;
  auto o = options();
  o.require_correct = true;
  o.dkn.reset();
  const auto recs = complete_run(s, d.path() / "r.jsonl", o);
  std::size_t screened = 0;
  for (const auto& r : recs)
    if (r["record"] == "screened_out") {
      ++screened;
      BOOST_TEST(!r["reason"].get<std::string>().empty());
    }
  BOOST_TEST(screened >= 2u);  // only_a, in both of its items
  for (const auto& r : recs)
    if (r["record"] == "result") BOOST_TEST(r["top1"] == true);
}

BOOST_AUTO_TEST_CASE(bad_options_are_refused) {
  const StoriesFixture s;
  testing::TempDir d;
  io::ResultsFile f(d.path() / "r.jsonl", kHeader);
  auto o = options();
  o.shard_rank = 2;
  o.shard_count = 2;
  BOOST_CHECK_THROW(run_dataset(s.probe, s.facts, f, o), ArgumentError);
  o = options();
  o.localize.thresholds.erase("b");
  BOOST_CHECK_THROW(run_dataset(s.probe, s.facts, f, o), ArgumentError);
  o = options();
  BOOST_CHECK_THROW(run_dataset(s.probe, std::vector<Fact>{}, f, o), ArgumentError);
  BOOST_CHECK_THROW(canonical_records({}), ArgumentError);
  BOOST_TEST(facts_fingerprint(s.facts) != facts_fingerprint({s.facts[0]}));
  BOOST_TEST(facts_fingerprint(s.facts).rfind("fnv1a64:", 0) == 0u);
}

BOOST_AUTO_TEST_CASE(a_resumed_file_holds_only_items_of_this_run) {
  const StoriesFixture s;
  testing::TempDir d;
  const auto p = d.path() / "r.jsonl";
  { io::ResultsFile f(p, kHeader); }
  auto try_with = [&](const json& rec) {
    { std::ofstream(p, std::ios::app) << rec.dump() << "\n"; }
    io::ResultsFile f(p, kHeader);
    try {
      run_dataset(s.probe, s.facts, f, options());
      return std::string("accepted");
    } catch (const FormatError& e) {
      return std::string(e.what());
    }
  };
  const auto msg = try_with(
      {{"record", "failure"}, {"index", 1}, {"fact", "lily"}, {"language", "a"}, {"reason", "x"}});
  BOOST_TEST(
      msg.find("r.jsonl:2: index 1 is fact 'tim' in this run, not 'lily'") != std::string::npos,
      msg);
}

BOOST_AUTO_TEST_SUITE_END()
