// Real mLAMA 1.1 lines. `real_mlama` runs on the committed fixture (tests/data/mlama, cut by
// tools/make_mlama_fixture.py: P36, P103, P17 × 8 lineids in en, zh, fr, ja): English + Chinese
// join, Chinese simplified, three and four languages. `real_mlama_full` runs the same checks on
// the whole of mLAMA ($KNPROBE_MLAMA_DIR or ../shared/data/mlama1.1) and is skipped, with a
// message, where that tree is not present.
#include <boost/test/unit_test.hpp>

#include "knprobe/data/mlama.hpp"
#include "support/paths.hpp"

using namespace knprobe;

namespace {

/// Every fact has one en and one zh prompt and a zh answer that OpenCC leaves unchanged.
std::size_t check_en_zh(const MlamaData& d) {
  const ChineseConverter t2s;
  std::size_t capitals = 0;
  for (const auto& f : d.facts) {
    BOOST_TEST_REQUIRE(f.prompts.count("en") == 1u);
    BOOST_TEST_REQUIRE(f.prompts.count("zh") == 1u);
    if (f.relation == "P36") ++capitals;
    // Simplified already: converting again changes nothing.
    BOOST_TEST_REQUIRE(t2s.convert(f.answers.at("zh")) == f.answers.at("zh"));
    BOOST_TEST_REQUIRE(t2s.convert(f.prompts.at("zh")) == f.prompts.at("zh"));
  }
  return capitals;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(real_mlama)

BOOST_AUTO_TEST_CASE(fixture_languages_join_and_chinese_is_simplified) {
  const auto root = testing::mlama_fixture_dir();
  const auto d = load_mlama(root);
  // 3 relations × 8 lineids present in all four languages (one zh object is "*": still a fact).
  BOOST_TEST(d.facts.size() == 24u);
  BOOST_TEST(check_en_zh(d) == 8u);
  bool chicago = false;
  for (const auto& f : d.facts)
    if (f.id == "P36:2") {
      chicago = true;
      BOOST_TEST(f.answers.at("en") == " Chicago");
      BOOST_TEST(f.prompts.at("zh").find("库克县") != std::string::npos, f.prompts.at("zh"));
    }
  BOOST_TEST(chicago);
  MlamaOptions o;
  o.languages = {"en", "fr", "ja", "zh"};
  o.relations = {"P103"};
  const auto four = load_mlama(root, o);
  BOOST_TEST(four.facts.size() == 8u);
  for (const auto& f : four.facts) BOOST_TEST_REQUIRE(f.prompts.size() == 4u);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(real_mlama_full,
                      *testing::needs(testing::full_mlama_dir,
                                      "the full mLAMA 1.1 tree ($KNPROBE_MLAMA_DIR or "
                                      "../shared/data/mlama1.1)",
                                      testing::Provider::external))

BOOST_AUTO_TEST_CASE(english_chinese_and_french_facts_load) {
  const auto root = testing::full_mlama_dir();
  const auto d = load_mlama(root);
  BOOST_TEST(d.facts.size() > 5000u, d.facts.size() << " en/zh facts");
  BOOST_TEST(check_en_zh(d) > 100u);
  MlamaOptions o;
  o.languages = {"en", "fr", "zh"};
  o.sample = 100;
  const auto three = load_mlama(root, o);
  BOOST_TEST(three.facts.size() == 100u);
  for (const auto& f : three.facts) BOOST_TEST_REQUIRE(f.prompts.size() == 3u);
}

BOOST_AUTO_TEST_SUITE_END()
