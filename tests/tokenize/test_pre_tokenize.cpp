#include "knprobe/tokenize/pre_tokenize.hpp"

#include <boost/test/unit_test.hpp>

#include "support/bpe_rules.hpp"
#include "support/paths.hpp"

using namespace knprobe;

BOOST_AUTO_TEST_SUITE(tokenize_pre_tokenize)

// Hugging Face `tokenizers` cut every string of tools/make_bpe_fixtures.py into these words
// (ByteLevel; Split with the Llama 3 / Qwen 2 regex; Digits + ByteLevel): the scanners must agree
// word for word, including digits of other scripts, CR/LF runs, case-folded contractions and
// emoji sequences.
BOOST_AUTO_TEST_CASE(words_equal_hugging_face_for_every_rule) {
  const auto g = knprobe::testing::read_json(knprobe::testing::data_dir() / "tokenizers" /
                                             "bpe_rules" / "pre_tokenize.json")["rules"];
  for (const auto& [name, rule] : knprobe::testing::k_bpe_rules) {
    BOOST_TEST_CONTEXT("rule " << name) {
      BOOST_REQUIRE(g.contains(name));
      BOOST_TEST(g[name].size() >= 30u);
      for (auto it = g[name].begin(); it != g[name].end(); ++it)
        BOOST_TEST_CONTEXT("text '" << it.key() << "'") {
          const auto want = it.value().get<std::vector<std::string>>();
          BOOST_TEST(pre_tokenize(it.key(), rule) == want, boost::test_tools::per_element());
        }
    }
  }
}

// llama.cpp's "default" list of four expressions, emulated with Python's `regex` module as
// unicode_regex_split applies it (tools/make_bpe_fixtures.py).
BOOST_AUTO_TEST_CASE(words_equal_llama_cpp_default_chain) {
  const auto g = knprobe::testing::read_json(knprobe::testing::data_dir() / "tokenizers" /
                                             "bpe_rules" / "pre_tokenize.json")["rules"];
  BOOST_REQUIRE(g.contains("llamacpp_default"));
  BOOST_TEST(g["llamacpp_default"].size() >= 30u);
  for (auto it = g["llamacpp_default"].begin(); it != g["llamacpp_default"].end(); ++it)
    BOOST_TEST_CONTEXT("text '" << it.key() << "'") {
      const auto want = it.value().get<std::vector<std::string>>();
      BOOST_TEST(pre_tokenize(it.key(), PreTokenizer::llama_default) == want,
                 boost::test_tools::per_element());
    }
  // Punctuation runs are cut out first, so contractions and " (" no longer hold together.
  BOOST_TEST(pre_tokenize("it's (ok) 12345", PreTokenizer::llama_default) ==
                 (std::vector<std::string>{"it", "'", "s", " ", "(", "ok", ")", " ", "123", "45"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(rules_differ_where_the_expressions_do) {
  // Llama 3 keeps up to three digits together, Qwen 2 and SmolLM one; GPT-2 any number.
  BOOST_TEST(
      pre_tokenize("x 12345", PreTokenizer::gpt2) == (std::vector<std::string>{"x", " 12345"}),
      boost::test_tools::per_element());
  BOOST_TEST(pre_tokenize("x 12345", PreTokenizer::llama3) ==
                 (std::vector<std::string>{"x", " ", "123", "45"}),
             boost::test_tools::per_element());
  BOOST_TEST(
      pre_tokenize("x 12", PreTokenizer::qwen2) == (std::vector<std::string>{"x", " ", "1", "2"}),
      boost::test_tools::per_element());
  // Llama 3 folds the case of contractions and lets one punctuation mark lead a word.
  BOOST_TEST(pre_tokenize("I'M (ok", PreTokenizer::llama3) ==
                 (std::vector<std::string>{"I", "'M", " (", "ok"}),
             boost::test_tools::per_element());
  BOOST_TEST(pre_tokenize("I'M", PreTokenizer::gpt2) == (std::vector<std::string>{"I", "'", "M"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(names_and_unknown_rules) {
  BOOST_TEST(int(pre_tokenizer_from_gguf_name("gpt2")) == int(PreTokenizer::gpt2));
  BOOST_TEST(int(pre_tokenizer_from_gguf_name("gpt-2")) == int(PreTokenizer::gpt2));  // llama.cpp
  // llama.cpp's "default" is a four-expression chain, not GPT-2's rule.
  BOOST_TEST(int(pre_tokenizer_from_gguf_name("default")) == int(PreTokenizer::llama_default));
  BOOST_TEST(int(pre_tokenizer_from_gguf_name("llama-bpe")) == int(PreTokenizer::llama3));
  BOOST_TEST(int(pre_tokenizer_from_gguf_name("qwen2")) == int(PreTokenizer::qwen2));
  BOOST_TEST(int(pre_tokenizer_from_gguf_name("smollm")) == int(PreTokenizer::smollm));
  BOOST_TEST(knprobe::testing::throws_with<TokenizerError>(
      [] { pre_tokenizer_from_gguf_name("tekken"); }, {"'tekken'", "not implemented"}));
  BOOST_TEST(knprobe::testing::throws_with<TokenizerError>(
      [] { pre_tokenize("bad \xff byte", PreTokenizer::llama3); }, {"invalid UTF-8"}));
}

BOOST_AUTO_TEST_SUITE_END()
