// The real mLAMA 1.1 data in ../shared/data/mlama1.1: English + Chinese join, Chinese simplified,
// and a third language (French) loads too.
#include <boost/test/unit_test.hpp>

#include "knprobe/data/mlama.hpp"
#include "support/paths.hpp"

using namespace knprobe;

BOOST_AUTO_TEST_SUITE(real_mlama)

BOOST_AUTO_TEST_CASE(english_chinese_and_french_facts_load) {
  const auto root = testing::shared_dir() / "data" / "mlama1.1";
  const auto d = load_mlama(root);
  BOOST_TEST(d.facts.size() > 5000u, d.facts.size() << " en/zh facts");
  const ChineseConverter t2s;
  std::size_t capitals = 0;
  for (const auto& f : d.facts) {
    BOOST_TEST_REQUIRE(f.prompts.count("en") == 1u);
    BOOST_TEST_REQUIRE(f.prompts.count("zh") == 1u);
    if (f.relation == "P36") ++capitals;
    // Simplified already: converting again changes nothing.
    BOOST_TEST_REQUIRE(t2s.convert(f.answers.at("zh")) == f.answers.at("zh"));
  }
  BOOST_TEST(capitals > 100u);
  MlamaOptions o;
  o.languages = {"en", "fr", "zh"};
  o.sample = 100;
  const auto three = load_mlama(root, o);
  BOOST_TEST(three.facts.size() == 100u);
  for (const auto& f : three.facts) BOOST_TEST_REQUIRE(f.prompts.size() == 3u);
}

BOOST_AUTO_TEST_SUITE_END()
