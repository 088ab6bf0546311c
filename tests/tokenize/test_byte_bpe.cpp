#include "knprobe/tokenize/byte_bpe.hpp"

#include <boost/test/unit_test.hpp>

#include "support/paths.hpp"

using namespace knprobe;

namespace {
std::filesystem::path dir() {
  return knprobe::testing::data_dir() / "tokenizers" / "byte_bpe";
}
}  // namespace

BOOST_AUTO_TEST_SUITE(tokenize_byte_bpe)

BOOST_AUTO_TEST_CASE(ids_equal_hugging_face_both_loaders) {
  const auto g = knprobe::testing::read_json(knprobe::testing::data_dir() / "tokenizers" /
                                             "golden.json")["byte_bpe"];
  const auto a = ByteBpe::from_directory(dir());
  const auto b = ByteBpe::from_tokenizer_json(dir() / "tokenizer.json");
  BOOST_TEST(g.size() >= 20u);
  for (auto it = g.begin(); it != g.end(); ++it) {
    const auto want = it.value().get<std::vector<TokenId>>();
    BOOST_TEST(a.encode(it.key()) == want, boost::test_tools::per_element());
    BOOST_TEST(b.encode(it.key()) == want, boost::test_tools::per_element());
    BOOST_TEST(a.decode(a.encode(it.key())) == it.key());
  }
}

BOOST_AUTO_TEST_CASE(leading_space_is_significant) {
  const auto t = ByteBpe::from_directory(dir());
  BOOST_TEST(t.encode(" Paris") != t.encode("Paris"));
  BOOST_TEST(t.decode(t.encode(" Paris")) == " Paris");
}

BOOST_AUTO_TEST_CASE(gpt2_pre_tokenization) {
  const auto p = ByteBpe::pre_tokenize("Hello world's  end 123!!\n\n x");
  const std::vector<std::string> want{"Hello", " world", "'s",   " ", " end",
                                      " 123",  "!!",     "\n\n", " x"};
  BOOST_TEST(p == want, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(bad_tokenizer_files_are_named) {
  using knprobe::testing::throws_with;
  auto json_with = [](const std::string& vocab, const std::string& merges) {
    return "{\"model\":{\"type\":\"BPE\",\"vocab\":" + vocab + ",\"merges\":" + merges + "}}";
  };
  BOOST_CHECK_NO_THROW(ByteBpe::from_tokenizer_json_text(
      json_with(R"({"a":0,"b":1,"ab":2})", R"(["a b"])"), "t.json"));
  BOOST_TEST(throws_with<FormatError>(
      [&] { ByteBpe::from_tokenizer_json_text(json_with(R"({"a":3.5})", "[]"), "t.json"); },
      {"t.json", "id of 'a'", "expected an integer"}));
  BOOST_TEST(throws_with<TokenizerError>(
      [&] { ByteBpe::from_tokenizer_json_text(json_with(R"({"a":0,"b":0})", "[]"), "t.json"); },
      {"t.json", "id 0 is given to both"}));
  BOOST_TEST(throws_with<TokenizerError>(
      [&] {
        ByteBpe::from_tokenizer_json_text(json_with(R"({"a":0,"b":1})", R"(["a zz"])"), "t.json");
      },
      {"t.json", "merge 0", "'zz'", "not in the vocabulary"}));
  BOOST_TEST(
      throws_with<FormatError>([&] { ByteBpe::from_tokenizer_json_text("{\"model\":", "t.json"); },
                               {"t.json", "not valid JSON"}));
  BOOST_TEST(throws_with<TokenizerError>(
      [&] { ByteBpe::from_tokenizer_json_text(R"({"model":{"type":"BPE"}})", "t.json"); },
      {"model.vocab must be an object"}));
}

BOOST_AUTO_TEST_SUITE_END()
