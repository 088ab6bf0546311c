// Real checkpoints through the Llama-family backend: stories260K (llama2.c) greedy decoding and
// Gemma 3 270M (GGUF Q4_K_M) answers to capital-city prompts in English and Chinese.
#include <boost/test/unit_test.hpp>
#include <chrono>

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
    const MatrixF z = t.final_hidden.bottomRows(1) * m.weights().head().transpose();
    Index best;
    z.row(0).maxCoeff(&best);
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

BOOST_AUTO_TEST_CASE(gemma3_answers_capitals) {
  const auto t0 = std::chrono::steady_clock::now();
  io::GgufFile f(testing::gemma3_gguf());
  const auto m = LlamaModel<float>(load_llama_gguf(f));
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto tok = SentencePieceBpe::from_gguf(f);
  const auto t1 = std::chrono::steady_clock::now();
  const auto en = greedy(m, tok.encode("The capital of France is"), 1);
  const double fwd_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  BOOST_TEST_MESSAGE("gemma3 load " << load_s << " s, one forward " << fwd_s << " s");
  BOOST_TEST(tok.decode(std::span(en).last(1)) == " Paris");
  const auto zh = greedy(m, tok.encode("法国的首都是"), 2);
  const std::string ans = tok.decode(std::span(zh).last(2));
  BOOST_TEST_MESSAGE("gemma3 法国的首都是 → " << ans);
  BOOST_TEST(ans.find("巴黎") != std::string::npos, ans);
}

BOOST_AUTO_TEST_SUITE_END()
