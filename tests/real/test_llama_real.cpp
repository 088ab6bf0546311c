// Real checkpoints through the Llama-family backend: stories260K (llama2.c) greedy decoding and
// Gemma 3 270M (GGUF Q4_K_M) answers to capital-city prompts in English and Chinese.
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <memory>

#include "knprobe/model/llama.hpp"
#include "knprobe/tokenize/llama2c_tokenizer.hpp"
#include "knprobe/tokenize/sentencepiece_bpe.hpp"
#include "support/paths.hpp"

using namespace knprobe;

namespace {
template <class M>
std::vector<TokenId> greedy(const M& m, std::vector<TokenId> ids, int n) {
  for (int i = 0; i < n; ++i) {
    const auto t = m.trace(ids);
    const MatrixF z = m.logits(t);
    Index best;
    z.row(z.rows() - 1).maxCoeff(&best);
    ids.push_back(static_cast<TokenId>(best));
  }
  return ids;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(real_llama)

BOOST_AUTO_TEST_CASE(stories260k_greedy_continuation) {
  const auto m = LlamaModel<float>::load(testing::stories_dir() / "stories260K.bin");
  const Llama2cTokenizer tok(testing::stories_dir() / "tok512.bin", m.vocab_size());
  const auto ids = greedy(m, {1}, 40);
  const std::string text = tok.decode(ids);
  BOOST_TEST_MESSAGE("stories260K: " << text);
  BOOST_TEST(text.rfind("Once upon a time, there was a little girl named Lily", 0) == 0u, text);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(real_gemma3,
                      *testing::needs(testing::find_gemma3_gguf,
                                      "Gemma 3 270M GGUF (bash scripts/setup.sh test)"))

BOOST_AUTO_TEST_CASE(gemma3_answers_capitals) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto f = std::make_shared<const io::GgufFile>(testing::gemma3_gguf());
  const QuantizedLlamaModel m(load_llama_gguf_quantized(f));
  const auto tok = SentencePieceBpe::from_gguf(*f);
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto t1 = std::chrono::steady_clock::now();
  const auto en = greedy(m, tok.encode("The capital of France is"), 1);
  const double fwd_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  BOOST_TEST_MESSAGE("gemma3 load " << load_s << " s, one forward " << fwd_s << " s");
  // The real model continues "The capital of France is" with " the" (then " a", " Paris") and
  // "法国的首都是" with 法国 (then 巴黎) — as transformers does on the same file (parity test
  // below).
  BOOST_TEST_MESSAGE("gemma3 'The capital of France is' → '" << tok.decode(std::span(en).last(1))
                                                             << "'");
  const auto paris = greedy(m, tok.encode("The capital of France is the city of"), 1);
  BOOST_TEST(tok.decode(std::span(paris).last(1)) == " Paris");
  const auto zh = greedy(m, tok.encode("法国的首都是"), 2);
  BOOST_TEST_MESSAGE("gemma3 法国的首都是 → " << tok.decode(std::span(zh).last(2)));
  const auto ja = greedy(m, tok.encode("日本的首都是"), 1);
  BOOST_TEST_MESSAGE("gemma3 日本的首都是 → " << tok.decode(std::span(ja).last(1)));
  const auto fr = greedy(m, tok.encode("The capital of Japan is the city of"), 1);
  BOOST_TEST(tok.decode(std::span(fr).last(1)) == " Tokyo");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(real_gemma3_parity,
                      *testing::needs(testing::find_gemma3_gguf,
                                      "Gemma 3 270M GGUF (bash scripts/setup.sh test)"))

// Logits of an independent implementation (HF transformers reading the same GGUF, float32; see
// tools/make_gemma3_reference.py) at every position for 40 fixed ids and the top-40 at the end.
template <class Model>
void check_logits_against_transformers(const Model& m, const SentencePieceBpe& tok,
                                       const char* which) {
  const auto ref = testing::read_json(testing::data_dir() / "gemma3" / "reference_logits.json");
  const auto fixed = ref["fixed_ids"].get<std::vector<TokenId>>();
  double worst = 0;
  for (const auto& p : ref["prompts"]) {
    const auto ids = p["ids"].get<std::vector<TokenId>>();
    BOOST_TEST(tok.encode(p["text"].get<std::string>()) == ids, boost::test_tools::per_element());
    const MatrixF z = m.logits(m.trace(ids));
    const auto fl = p["fixed_logits"].get<std::vector<std::vector<float>>>();
    for (std::size_t pos = 0; pos < ids.size(); ++pos) {
      const float scale = z.row(static_cast<Index>(pos)).cwiseAbs().maxCoeff();
      for (std::size_t j = 0; j < fixed.size(); ++j)
        worst = std::max<double>(
            worst, std::abs(z(static_cast<Index>(pos), fixed[j]) - fl[pos][j]) / scale);
    }
    const auto top = p["top_ids"].get<std::vector<TokenId>>();
    const auto tl = p["top_logits"].get<std::vector<float>>();
    const Index last = z.rows() - 1;
    Index best;
    z.row(last).maxCoeff(&best);
    BOOST_TEST(best == top[0], p["text"].get<std::string>());
    for (std::size_t j = 0; j < top.size(); ++j)
      worst = std::max<double>(worst, std::abs(z(last, top[j]) - tl[j]) / std::abs(tl[0]));
    BOOST_TEST_MESSAGE(p["text"].get<std::string>()
                       << " → " << tok.decode(std::vector<TokenId>{static_cast<TokenId>(best)}));
  }
  BOOST_TEST_MESSAGE("gemma3 logits vs transformers (" << which << "): worst relative difference "
                                                       << worst);
  BOOST_TEST(worst < 1e-4, which);
}

BOOST_AUTO_TEST_CASE(logits_match_transformers) {
  const auto f = std::make_shared<const io::GgufFile>(testing::gemma3_gguf());
  const auto tok = SentencePieceBpe::from_gguf(*f);
  // Weights kept in their GGUF blocks (products dequantize tiles on the fly) …
  check_logits_against_transformers(QuantizedLlamaModel(load_llama_gguf_quantized(f)), tok,
                                    "quantized storage");
  // … and dequantized to float32 at load.
  check_logits_against_transformers(LlamaModel<float>(load_llama_gguf(*f)), tok, "float32");
}

BOOST_AUTO_TEST_SUITE_END()
