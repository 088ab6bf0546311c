// data/facts.hpp: what a fact line must satisfy; bad lines are reported with the reason and
// skipped, the rest of the file is loaded.
#include "knprobe/data/facts.hpp"

#include <boost/test/unit_test.hpp>

#include "support/paths.hpp"

using namespace knprobe;

namespace {

bool fact_problem(const FactFile& f, std::size_t line, const std::string& words) {
  for (const auto& p : f.problems)
    if (p.line == line && p.reason.find(words) != std::string::npos) return true;
  return false;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(data_facts)

BOOST_AUTO_TEST_CASE(bad_lines_are_reported_and_skipped) {
  const std::string ok = R"({"id":"a","relation":"r","prompts":{"en":"P"},"answers":{"en":" A"}})";
  const std::string text =
      ok + "\n" +                                                                       // 1
      R"({"id":"a","prompts":{"en":"P"},"answers":{"en":" A"}})" + "\n" +               // 2
      R"({"id":"","prompts":{"en":"P"},"answers":{"en":" A"}})" + "\n" +                // 3
      R"({"id":"b\u0001","prompts":{"en":"P"},"answers":{"en":" A"}})" + "\n" +         // 4
      R"({"id":"c","prompts":{"../x":"P"},"answers":{"../x":" A"}})" + "\n" +           // 5
      R"({"id":"d","prompts":{"en":""},"answers":{"en":" A"}})" + "\n" +                // 6
      R"({"id":"e","relation":7,"prompts":{"en":"P"},"answers":{"en":" A"}})" + "\n" +  // 7
      R"({"id":"f","prompts":{"en":")" + std::string(70000, 'x') + R"("},"answers":{"en":"A"}})" +
      "\n" +                                                                                // 8
      "not json\n" +                                                                        // 9
      R"({"id":"g","prompts":{"en":"P","zh":"Q"},"answers":{"en":" A","zh":"B"}})" + "\n";  // 10
  const auto f = parse_facts(text, "t.jsonl");
  BOOST_TEST(f.facts.size() == 2u);
  BOOST_TEST(f.facts[0].id == "a");
  BOOST_TEST(f.facts[1].id == "g");
  BOOST_TEST(fact_problem(f, 2, "duplicate id 'a' (first on line 1)"));
  BOOST_TEST(fact_problem(f, 3, "'id' is empty"));
  BOOST_TEST(fact_problem(f, 4, "control character"));
  BOOST_TEST(fact_problem(f, 5, "language code '../x'"));
  BOOST_TEST(fact_problem(f, 6, "prompts.en must be a non-empty string"));
  BOOST_TEST(fact_problem(f, 7, "'relation' must be a string"));
  BOOST_TEST(fact_problem(f, 8, "longer than 65536 bytes"));
  BOOST_TEST(fact_problem(f, 9, "not valid JSON"));
  BOOST_TEST(f.problems.size() == 8u);
}

BOOST_AUTO_TEST_CASE(unreadable_files_are_named) {
  testing::TempDir dir;
  BOOST_TEST(testing::throws_with<IoError>([&] { (void)read_facts(dir.path() / "none.jsonl"); },
                                           {"none.jsonl", "cannot open fact file"}));
  BOOST_TEST(
      testing::throws_with<IoError>([&] { (void)read_facts(dir.path()); }, {"not a regular file"}));
  const auto empty = dir.write("empty.jsonl", "\n\n");
  BOOST_TEST(testing::throws_with<FormatError>([&] { (void)read_facts(empty); },
                                               {"empty.jsonl", "no facts"}));
  BOOST_TEST(valid_language_code("zh-Hans"));
  BOOST_TEST(!valid_language_code(""));
  BOOST_TEST(!valid_language_code("a/b"));
  BOOST_TEST(!valid_language_code(std::string(17, 'a')));
}

BOOST_AUTO_TEST_SUITE_END()
