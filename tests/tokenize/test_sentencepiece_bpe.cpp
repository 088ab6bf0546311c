#include "knprobe/tokenize/sentencepiece_bpe.hpp"

#include <boost/test/unit_test.hpp>

#include "support/paths.hpp"

using namespace knprobe;

namespace {
std::filesystem::path spm_json_dir() {
  return knprobe::testing::data_dir() / "tokenizers" / "spm_json";
}
nlohmann::json spm_json_variant(const char* variant) {
  return knprobe::testing::read_json(spm_json_dir() / variant / "tokenizer.json");
}
SentencePieceBpe spm_json_from(const nlohmann::json& j) {
  return SentencePieceBpe::from_tokenizer_json_value(j, "t.json");
}
}  // namespace

BOOST_AUTO_TEST_SUITE(tokenize_sentencepiece_bpe)

// One small vocabulary written with four tokenizer.json designs (tools/make_spm_json_fixtures.py):
// Llama 2's Prepend + Replace normalizer, a Metaspace("first") pre-tokenizer, Gemma's Replace
// with no prefix, and Metaspace("always", split) without byte fallback. knprobe gives the ids of
// Hugging Face `tokenizers` for every string: multilingual text, emoji (byte fallback), runs of
// spaces, digits, added tokens inside the text, unknown characters fused into one <unk>, and
// added tokens marked "normalized" (the original Llama 2 files) matched as "▁</s>" in the
// normalized text.
BOOST_AUTO_TEST_CASE(ids_equal_hugging_face_for_every_design) {
  const auto g = knprobe::testing::read_json(spm_json_dir() / "expected.json")["ids"];
  for (const char* variant : {"llama2", "llama2_normalized", "metaspace", "gemma", "split_unk"}) {
    BOOST_TEST_CONTEXT("variant " << variant) {
      const auto t =
          SentencePieceBpe::from_tokenizer_json(spm_json_dir() / variant / "tokenizer.json");
      BOOST_REQUIRE(g.contains(variant));
      BOOST_TEST(g[variant].size() >= 40u);
      for (auto it = g[variant].begin(); it != g[variant].end(); ++it)
        BOOST_TEST_CONTEXT("text '" << it.key() << "'") {
          const auto want = it.value().get<std::vector<TokenId>>();
          BOOST_TEST(t.encode(it.key()) == want, boost::test_tools::per_element());
        }
    }
  }
}

BOOST_AUTO_TEST_CASE(prefix_rules_bos_and_decoding) {
  const auto legacy = spm_json_from(spm_json_variant("llama2"));
  const auto meta = spm_json_from(spm_json_variant("metaspace"));
  BOOST_TEST(*legacy.special().bos == 1);
  BOOST_TEST(*legacy.special().unk == 0);
  // Prepend("▁") prefixes " Paris" once more; Metaspace only where no '▁' leads already.
  EncodeOptions plain;
  plain.add_special = false;
  const auto a = legacy.encode(" Paris", plain), b = meta.encode(" Paris", plain);
  BOOST_TEST(a.size() == b.size() + 1);
  // Without the dummy prefix (an answer continuing a prompt) both give the same ids.
  plain.dummy_prefix = false;
  BOOST_TEST(legacy.encode(" Paris", plain) == meta.encode(" Paris", plain),
             boost::test_tools::per_element());
  // Text comes back from the ids: '▁' as spaces, byte pieces as their bytes.
  BOOST_TEST(meta.decode(meta.encode("x 🙂 y", plain)) == "x 🙂 y");
}

BOOST_AUTO_TEST_CASE(unimplemented_fields_are_refused_by_name) {
  using knprobe::testing::throws_with;
  auto with = [](const char* field, nlohmann::json v) {
    auto j = spm_json_variant("llama2");
    j[field] = std::move(v);
    return j;
  };
  BOOST_TEST(throws_with<TokenizerError>(
      [&] {
        spm_json_from(with("normalizer", {{"type", "NFKC"}}));
      },
      {"t.json", "normalizer", "NFKC", "not implemented"}));
  BOOST_TEST(throws_with<TokenizerError>(
      [&] {
        spm_json_from(with("pre_tokenizer", {{"type", "Metaspace"},
                                             {"replacement", "\xE2\x96\x81"},
                                             {"prepend_scheme", "sometimes"}}));
      },
      {"t.json", "pre_tokenizer", "sometimes"}));
  BOOST_TEST(throws_with<TokenizerError>(
      [&] {
        spm_json_from(with("pre_tokenizer", {{"type", "Whitespace"}}));
      },
      {"t.json", "pre_tokenizer", "Whitespace"}));
  auto nothing = with("normalizer", nullptr);
  BOOST_TEST(
      throws_with<TokenizerError>([&] { spm_json_from(nothing); }, {"t.json", "spaces as '▁'"}));
  auto dropout = spm_json_variant("llama2");
  dropout["model"]["dropout"] = 0.1;
  BOOST_TEST(throws_with<TokenizerError>([&] { spm_json_from(dropout); },
                                         {"t.json", "model.dropout", "not implemented"}));
  auto unk = spm_json_variant("llama2");
  unk["model"]["unk_token"] = "<nope>";
  BOOST_TEST(
      throws_with<TokenizerError>([&] { spm_json_from(unk); }, {"t.json", "unk_token", "<nope>"}));
  auto post = spm_json_variant("llama2");
  post["post_processor"] = {{"type", "RobertaProcessing"}};
  BOOST_TEST(throws_with<TokenizerError>([&] { spm_json_from(post); },
                                         {"t.json", "post_processor", "not implemented"}));
  // An added token whose matching strips whitespace is refused where a text contains it.
  auto strip = spm_json_variant("llama2");
  strip["added_tokens"][2]["rstrip"] = true;
  const auto t = spm_json_from(strip);
  BOOST_TEST(t.encode("plain text").size() > 1u);
  BOOST_TEST(throws_with<TokenizerError>([&] { t.encode("a </s> b"); },
                                         {"'</s>'", "rstrip", "not implemented"}));
}

// Only pieces named exactly <0x00> .. <0xFF> are byte pieces: "<0x-1>" (which sscanf's %X would
// read as 0xFFFFFFFF) is an ordinary piece, never an index into the byte table.
BOOST_AUTO_TEST_CASE(byte_pieces_are_exact_names) {
  auto j = spm_json_variant("llama2");
  const auto n = j["model"]["vocab"].size();
  j["model"]["vocab"]["<0x-1>"] = n;
  j["model"]["vocab"]["<0x+7>"] = n + 1;
  const auto t = spm_json_from(j);
  BOOST_TEST(*t.piece_to_id("<0x-1>") == TokenId(n));
  BOOST_TEST(int(t.piece(TokenId(n)).type) == int(PieceType::normal));
  BOOST_TEST(int(t.piece(*t.piece_to_id("<0x41>")).type) == int(PieceType::byte));
  // Duplicate merges keep their last rank and added-token ids must not belong to another piece
  // (tokenizer_json.hpp), both as `tokenizers` reads the file.
  auto clash = spm_json_variant("llama2");
  clash["added_tokens"].push_back({{"id", 300}, {"content", "<extra>"}, {"special", true}});
  BOOST_TEST(knprobe::testing::throws_with<TokenizerError>(
      [&] { spm_json_from(clash); }, {"t.json", "'<extra>' has id 300", "which is the id of"}));
  auto far = spm_json_variant("llama2");
  far["model"]["vocab"]["<far>"] = (1 << 24) - 2;
  BOOST_TEST(knprobe::testing::throws_with<TokenizerError>([&] { spm_json_from(far); },
                                                           {"t.json", "nearly contiguous"}));
}

BOOST_AUTO_TEST_SUITE_END()
