#include "knprobe/tokenize/wordpiece.hpp"

#include <boost/test/unit_test.hpp>

#include "support/paths.hpp"

using namespace knprobe;

namespace {
std::filesystem::path wordpiece_dir() {
  return knprobe::testing::data_dir() / "tokenizers" / "wordpiece";
}
nlohmann::json golden() {
  return knprobe::testing::read_json(knprobe::testing::data_dir() / "tokenizers" / "golden.json");
}
}  // namespace

BOOST_AUTO_TEST_SUITE(tokenize_wordpiece)

BOOST_AUTO_TEST_CASE(cased_ids_equal_hugging_face) {
  const auto tok = WordPiece::from_directory(wordpiece_dir());
  const auto g = golden()["wordpiece"]["cased"];
  BOOST_TEST(g.size() >= 20u);
  for (auto it = g.begin(); it != g.end(); ++it)
    BOOST_TEST(tok.encode(it.key()) == it.value().get<std::vector<TokenId>>(),
               boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(uncased_ids_equal_hugging_face_and_tokenizer_json_loads) {
  auto from_json = WordPiece::from_tokenizer_json(wordpiece_dir() / "tokenizer.json");
  std::vector<std::string> vocab;
  for (int i = 0; i < from_json.vocab_size(); ++i) vocab.emplace_back(from_json.id_to_piece(i));
  WordPieceOptions o;
  o.lowercase = true;
  o.strip_accents = true;
  const WordPiece uncased(vocab, o);
  const auto g = golden()["wordpiece"];
  for (auto it = g["uncased"].begin(); it != g["uncased"].end(); ++it)
    BOOST_TEST(uncased.encode(it.key()) == it.value().get<std::vector<TokenId>>(),
               boost::test_tools::per_element());
  for (auto it = g["cased"].begin(); it != g["cased"].end(); ++it)
    BOOST_TEST(from_json.encode(it.key()) == it.value().get<std::vector<TokenId>>(),
               boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(specials_and_decode) {
  const auto tok = WordPiece::from_directory(wordpiece_dir());
  BOOST_TEST(tok.special().mask.has_value());
  const auto ids = tok.encode("The capital of France is [MASK].");
  BOOST_TEST((std::find(ids.begin(), ids.end(), *tok.special().mask) != ids.end()));
  BOOST_TEST(ids.front() == *tok.special().cls);
  BOOST_TEST(tok.decode(tok.encode("Paris is a city")) == "Paris is a city");
  BOOST_CHECK_THROW(tok.decode(std::vector<TokenId>{-1}), TokenizerError);
  BOOST_CHECK_THROW(tok.encode("bad \xff utf8"), TokenizerError);
  BOOST_CHECK_THROW(WordPiece({"a", "b"}, {}), TokenizerError);  // no [UNK]
}

BOOST_AUTO_TEST_SUITE_END()
