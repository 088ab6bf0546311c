#include "knprobe/tokenize/tokenizer_json.hpp"

#include <boost/test/unit_test.hpp>

#include "support/paths.hpp"

using namespace knprobe;

BOOST_AUTO_TEST_SUITE(tokenize_tokenizer_json)

// Which reader a tokenizer.json needs: every byte-level fixture is byte-level, every
// SentencePiece-style one is not.
BOOST_AUTO_TEST_CASE(byte_level_or_sentencepiece_style) {
  const auto d = knprobe::testing::data_dir() / "tokenizers";
  for (const char* rule : {"gpt2", "llama3", "qwen2", "smollm"})
    BOOST_TEST(detail::hf::is_byte_level(
                   knprobe::testing::read_json(d / "bpe_rules" / rule / "tokenizer.json")),
               rule);
  for (const char* variant : {"llama2", "llama2_normalized", "metaspace", "gemma", "split_unk"})
    BOOST_TEST(!detail::hf::is_byte_level(
                   knprobe::testing::read_json(d / "spm_json" / variant / "tokenizer.json")),
               variant);
}

BOOST_AUTO_TEST_CASE(post_processor_and_added_tokens) {
  using knprobe::testing::throws_with;
  const auto bos = nlohmann::json::parse(R"({"type":"TemplateProcessing",
    "single":[{"SpecialToken":{"id":"<s>"}},{"Sequence":{"id":"A"}}],
    "special_tokens":{"<s>":{"ids":[1]}}})");
  BOOST_TEST(*detail::hf::read_post_processor(bos, "t.json", 10) == 1);
  BOOST_TEST(!detail::hf::read_post_processor(nlohmann::json(nullptr), "t.json", 10));
  BOOST_TEST(throws_with<FormatError>([&] { detail::hf::read_post_processor(bos, "t.json", 1); },
                                      {"t.json", "post_processor special token id"}));
  const auto two = nlohmann::json{{"type", "Sequence"}, {"processors", {bos, bos}}};
  BOOST_TEST(
      throws_with<TokenizerError>([&] { detail::hf::read_post_processor(two, "t.json", 10); },
                                  {"t.json", "two leading tokens"}));
  std::unordered_map<std::string, TokenId> vocab{{"a", 0}, {"<s>", 1}};
  const auto j = nlohmann::json::parse(R"({"added_tokens":[
    {"id":1,"content":"<s>","special":true},{"id":2,"content":"<x>","lstrip":true}]})");
  const auto added = detail::hf::read_added_tokens(j, "t.json", vocab);
  BOOST_TEST(added.size() == 2u);
  BOOST_TEST(added[0].special);
  BOOST_TEST(!added[0].strips);
  BOOST_TEST(added[1].strips);
  BOOST_TEST(vocab.at("<x>") == 2);
  const auto clash = nlohmann::json::parse(R"({"added_tokens":[{"id":0,"content":"<s>"}]})");
  BOOST_TEST(
      throws_with<TokenizerError>([&] { detail::hf::read_added_tokens(clash, "t.json", vocab); },
                                  {"t.json", "'<s>' has id 0", "gives it 1"}));
}

BOOST_AUTO_TEST_SUITE_END()
