// mLAMA loader (include/knprobe/data/mlama.hpp) on a small tree of our own in the mLAMA layout:
// template cutting for decoders and [MASK] for encoders, joining by (relation, lineid), traditional
// → simplified Chinese, train + dev concatenated, single-file relations, the problems reported,
// and seeded sampling.
#include "knprobe/data/mlama.hpp"

#include <boost/test/unit_test.hpp>

#include "support/paths.hpp"

using namespace knprobe;

namespace {

void put(const std::filesystem::path& p, const std::string& text) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

/// en: P36 (train + dev), P1 ([Y] first), P2 (no [Y]), P3 (no template); zh: the same
/// relations, P36 in one file.
void write_tree(const std::filesystem::path& r) {
  put(r / "en/templates/train.jsonl",
      "{\"relation\":\"P36\",\"template\":\"The capital of [X] is [Y] .\"}\n"
      "{\"relation\":\"P1\",\"template\":\"[Y] is the home of [X] .\"}\n");
  put(r / "en/templates/dev.jsonl", "{\"relation\":\"P2\",\"template\":\"[X] is nice .\"}\n");
  put(r / "en/P36/train.jsonl",
      "{\"lineid\":1,\"sub_label\":\"France\",\"obj_label\":\"Paris\"}\n"
      "{\"lineid\":2,\"sub_label\":\"Japan\",\"obj_label\":\"Tokyo\"}\n");
  put(r / "en/P36/dev.jsonl",
      "{\"lineid\":3,\"sub_label\":\"Peru\",\"obj_label\":\"Lima\"}\n"
      "not json\n");
  put(r / "en/P1/train.jsonl", "{\"lineid\":1,\"sub_label\":\"A\",\"obj_label\":\"B\"}\n");
  put(r / "en/P2.jsonl", "{\"lineid\":1,\"sub_label\":\"A\",\"obj_label\":\"B\"}\n");
  put(r / "en/P3.jsonl", "{\"lineid\":1,\"sub_label\":\"A\",\"obj_label\":\"B\"}\n");
  put(r / "zh/templates/train.jsonl",
      "{\"relation\":\"P36\",\"template\":\"[X]的首都是[Y]。\"}\n"
      "{\"relation\":\"P1\",\"template\":\"[Y]是[X]的家。\"}\n"
      "{\"relation\":\"P2\",\"template\":\"[X]很好[Y]。\"}\n");
  put(r / "zh/P36.jsonl",  // traditional characters: 國 → 国, 東 → 东
      "{\"lineid\":1,\"sub_label\":\"法國\",\"obj_label\":\"巴黎\"}\n"
      "{\"lineid\":2,\"sub_label\":\"日本\",\"obj_label\":\"東京\"}\n");
  put(r / "zh/P1.jsonl", "{\"lineid\":1,\"sub_label\":\"甲\",\"obj_label\":\"乙\"}\n");
  put(r / "zh/P2.jsonl", "{\"lineid\":1,\"sub_label\":\"甲\",\"obj_label\":\"乙\"}\n");
}

bool has_problem(const MlamaData& d, const std::string& where, const std::string& words) {
  for (const auto& p : d.problems)
    if (p.where.find(where) != std::string::npos && p.reason.find(words) != std::string::npos)
      return true;
  return false;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(data_mlama)

BOOST_AUTO_TEST_CASE(decoder_prompts_join_languages_and_simplify_chinese) {
  testing::TempDir dir;
  write_tree(dir.path());
  const auto d = load_mlama(dir.path());
  BOOST_REQUIRE(d.facts.size() == 2u);  // P36:1, P36:2 (P36:3 has no zh; P1, P2 unusable)
  const auto& f = d.facts[0];
  BOOST_TEST(f.id == "P36:1");
  BOOST_TEST(f.relation == "P36");
  BOOST_TEST(f.prompts.at("en") == "The capital of France is");
  BOOST_TEST(f.answers.at("en") == " Paris");
  BOOST_TEST(f.prompts.at("zh") == "法国的首都是");
  BOOST_TEST(f.answers.at("zh") == "巴黎");
  BOOST_TEST(d.facts[1].answers.at("zh") == "东京");
  BOOST_TEST(has_problem(d, "en/P1", "puts [Y] before [X]"));
  BOOST_TEST(has_problem(d, "en/P2", "must hold [Y] exactly once"));
  BOOST_TEST(has_problem(d, "en/P3", "relation has no template"));
  BOOST_TEST(has_problem(d, "P36", "1 facts lack"));
  BOOST_TEST(has_problem(d, "dev.jsonl:2", "not valid JSON"));
}

BOOST_AUTO_TEST_CASE(encoder_prompts_hold_the_mask) {
  testing::TempDir dir;
  write_tree(dir.path());
  MlamaOptions o;
  o.languages = {"en"};
  o.objective = Objective::masked_lm;
  const auto d = load_mlama(dir.path(), o);
  BOOST_REQUIRE(d.facts.size() == 4u);  // P1:1, P36:1..3 (P2 has no [Y])
  BOOST_TEST(d.facts[0].prompts.at("en") == "[MASK] is the home of A .");
  BOOST_TEST(d.facts[1].prompts.at("en") == "The capital of France is [MASK] .");
  BOOST_TEST(d.facts[1].answers.at("en") == "Paris");
}

BOOST_AUTO_TEST_CASE(sampling_is_seeded_and_relations_filter) {
  testing::TempDir dir;
  write_tree(dir.path());
  MlamaOptions o;
  o.languages = {"en"};
  o.relations = {"P36", "P404"};
  o.sample = 2;
  const auto a = load_mlama(dir.path(), o), b = load_mlama(dir.path(), o);
  BOOST_REQUIRE(a.facts.size() == 2u);
  BOOST_TEST(a.facts[0].id == b.facts[0].id);
  BOOST_TEST(a.facts[1].id == b.facts[1].id);
  BOOST_TEST(a.facts[0].id < a.facts[1].id);
  BOOST_TEST(has_problem(a, "P404", "no data"));
  std::set<std::string> seen;
  for (std::uint64_t s = 0; s < 20; ++s) {
    o.seed = s;
    const auto c = load_mlama(dir.path(), o);
    seen.insert(c.facts[0].id + c.facts[1].id);
  }
  BOOST_TEST(seen.size() > 1u);  // the seed matters
}

BOOST_AUTO_TEST_CASE(bad_roots_are_named) {
  testing::TempDir dir;
  write_tree(dir.path());
  MlamaOptions o;
  o.languages = {"en", "xx"};
  BOOST_TEST(testing::throws_with<FormatError>([&] { load_mlama(dir.path(), o); },
                                               {"no folder for language 'xx'"}));
  BOOST_TEST(testing::throws_with<FormatError>([&] { load_mlama(dir.path() / "nowhere", o); },
                                               {"not a directory"}));
  o.languages = {};
  BOOST_TEST(
      testing::throws_with<ArgumentError>([&] { load_mlama(dir.path(), o); }, {"no languages"}));
}

BOOST_AUTO_TEST_CASE(integers_templates_and_codes_are_checked) {
  testing::TempDir dir;
  write_tree(dir.path());
  const auto r = dir.path();
  put(r / "en/P36/train.jsonl",
      "{\"lineid\":1,\"sub_label\":\"France\",\"obj_label\":\"Paris\"}\n"
      "{\"lineid\":1099511627776,\"sub_label\":\"Big\",\"obj_label\":\"Town\"}\n"
      "{\"lineid\":3.5,\"sub_label\":\"Half\",\"obj_label\":\"Town\"}\n"
      "{\"lineid\":1,\"sub_label\":\"Again\",\"obj_label\":\"Town\"}\n");
  put(r / "en/templates/dev.jsonl",
      "{\"relation\":\"P2\",\"template\":\"[X] and [X] are [Y] .\"}\n");
  const auto d = load_mlama(r);
  BOOST_TEST(has_problem(d, "train.jsonl:2", "expected an integer"));  // 2^40 is not cut to 0
  BOOST_TEST(has_problem(d, "train.jsonl:3", "expected an integer"));  // 3.5 is not 3
  BOOST_TEST(has_problem(d, "train.jsonl:4", "lineid 1 appears twice"));
  BOOST_TEST(has_problem(d, "P2", "exactly once"));
  for (const auto& f : d.facts)
    if (f.id == "P36:1") BOOST_TEST(f.prompts.at("en").find("France") != std::string::npos);
  MlamaOptions o;
  o.languages = {"en", "../zh"};
  BOOST_TEST(
      testing::throws_with<ArgumentError>([&] { load_mlama(r, o); }, {"language code '../zh'"}));
}

BOOST_AUTO_TEST_SUITE_END()
