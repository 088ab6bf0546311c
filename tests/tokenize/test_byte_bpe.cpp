#include "knprobe/tokenize/byte_bpe.hpp"

#include <boost/test/unit_test.hpp>

#include "support/bpe_rules.hpp"
#include "support/paths.hpp"

using namespace knprobe;

namespace {
std::filesystem::path dir() {
  return knprobe::testing::data_dir() / "tokenizers" / "byte_bpe";
}
std::filesystem::path rules_dir() {
  return knprobe::testing::data_dir() / "tokenizers" / "bpe_rules";
}

/// A GGUF v3 file without tensors holding a byte-level BPE tokenizer; each entry of `kv` is one
/// key with its encoded type and value.
struct BpeGguf {
  std::vector<std::string> kv;
  template <class T>
  static std::string raw(T v) {
    return std::string(reinterpret_cast<const char*>(&v), sizeof(v));
  }
  static std::string str(const std::string& s) { return raw(std::uint64_t(s.size())) + s; }
  void text(const std::string& key, const std::string& v) {
    kv.push_back(str(key) + raw(std::uint32_t(8)) + str(v));
  }
  void strings(const std::string& key, const std::vector<std::string>& v) {
    std::string b =
        str(key) + raw(std::uint32_t(9)) + raw(std::uint32_t(8)) + raw(std::uint64_t(v.size()));
    for (const auto& x : v) b += str(x);
    kv.push_back(b);
  }
  void ints(const std::string& key, const std::vector<std::int32_t>& v) {
    std::string b =
        str(key) + raw(std::uint32_t(9)) + raw(std::uint32_t(5)) + raw(std::uint64_t(v.size()));
    for (auto x : v) b += raw(x);
    kv.push_back(b);
  }
  void u32(const std::string& key, std::uint32_t v) {
    kv.push_back(str(key) + raw(std::uint32_t(4)) + raw(v));
  }
  void flag(const std::string& key, bool v) {
    kv.push_back(str(key) + raw(std::uint32_t(7)) + raw(std::uint8_t(v)));
  }
  std::string bytes() const {
    std::string b = raw(std::uint32_t(0x46554747u)) + raw(std::uint32_t(3)) +
                    raw(std::uint64_t(0)) + raw(std::uint64_t(kv.size()));
    for (const auto& x : kv) b += x;
    b.resize((b.size() + 31) / 32 * 32, '\0');
    return b;
  }
  /// A valid two-letter tokenizer: a, b, ab (merge "a b"), <s> (control).
  static BpeGguf valid(const std::string& pre = "gpt2") {
    BpeGguf g;
    g.text("tokenizer.ggml.model", "gpt2");
    if (!pre.empty()) g.text("tokenizer.ggml.pre", pre);
    g.strings("tokenizer.ggml.tokens", {"a", "b", "ab", "<s>"});
    g.strings("tokenizer.ggml.merges", {"a b"});
    g.ints("tokenizer.ggml.token_type", {1, 1, 1, 3});
    g.u32("tokenizer.ggml.bos_token_id", 3);
    return g;
  }
};
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

// For each pre-tokenisation rule, a small BPE trained by Hugging Face `tokenizers` with that rule
// (tools/make_bpe_fixtures.py): knprobe gives HF's ids from its tokenizer.json and from the GGUF
// file holding the same vocabulary (tokenizer.ggml.pre names the rule as llama.cpp does).
BOOST_AUTO_TEST_CASE(ids_equal_hugging_face_for_llama3_qwen2_smollm_from_json_and_gguf) {
  const auto g = knprobe::testing::read_json(rules_dir() / "expected.json")["ids"];
  for (const auto& [name, rule] : knprobe::testing::k_bpe_rules) {
    BOOST_TEST_CONTEXT("rule " << name) {
      const auto a = ByteBpe::from_tokenizer_json(rules_dir() / name / "tokenizer.json");
      const io::GgufFile file(rules_dir() / name / "model.gguf");
      const auto b = ByteBpe::from_gguf(file);
      BOOST_TEST(int(a.pre_tokenizer()) == int(rule));
      BOOST_TEST(int(b.pre_tokenizer()) == int(rule));
      BOOST_TEST(a.vocab_size() == b.vocab_size());
      BOOST_TEST(g[name].size() >= 30u);
      // Llama 3 frames with BOS: its tokenizer.json through TemplateProcessing, its GGUF through
      // add_bos_token (llama-bpe's default).
      const bool bos = rule == PreTokenizer::llama3;
      BOOST_TEST(a.adds_bos() == bos);
      BOOST_TEST(b.adds_bos() == bos);
      for (auto it = g[name].begin(); it != g[name].end(); ++it)
        BOOST_TEST_CONTEXT("text '" << it.key() << "'") {
          const auto want = it.value().get<std::vector<TokenId>>();
          BOOST_TEST(a.encode(it.key()) == want, boost::test_tools::per_element());
          BOOST_TEST(b.encode(it.key()) == want, boost::test_tools::per_element());
          if (bos) BOOST_TEST(want.front() == *b.special().bos);
          EncodeOptions plain;
          plain.add_special = false;
          // Text comes back (NFC-normalised for Qwen 2), control tokens included when asked.
          BOOST_TEST(b.decode(b.encode(it.key(), plain), false) ==
                     (rule == PreTokenizer::qwen2 ? b.decode(want, false) : it.key()));
        }
    }
  }
}

// llama.cpp's "default" chain (no Hugging Face pre-tokenizer spells it): the gpt2 fixture's
// vocabulary in a GGUF file with tokenizer.ggml.pre "default" gives the ids of the BPE model of
// `tokenizers` applied to the pieces of tools/make_bpe_fixtures.py's emulation of llama.cpp
// (the control token <|endoftext|> split out first, as llama.cpp does).
BOOST_AUTO_TEST_CASE(ids_under_llama_cpp_default_chain_from_gguf) {
  const auto g = knprobe::testing::read_json(rules_dir() / "expected.json")["ids"]["default"];
  const io::GgufFile file(rules_dir() / "default" / "model.gguf");
  const auto b = ByteBpe::from_gguf(file);
  BOOST_TEST(int(b.pre_tokenizer()) == int(PreTokenizer::llama_default));
  BOOST_TEST(g.size() >= 30u);
  std::size_t differ_from_gpt2 = 0;
  const auto gpt2 = knprobe::testing::read_json(rules_dir() / "expected.json")["ids"]["gpt2"];
  for (auto it = g.begin(); it != g.end(); ++it) BOOST_TEST_CONTEXT("text '" << it.key() << "'") {
      const auto want = it.value().get<std::vector<TokenId>>();
      BOOST_TEST(b.encode(it.key()) == want, boost::test_tools::per_element());
      EncodeOptions plain;
      plain.add_special = false;
      BOOST_TEST(b.decode(b.encode(it.key(), plain), false) == it.key());
      differ_from_gpt2 += gpt2[it.key()].get<std::vector<TokenId>>() != want;
    }
  BOOST_TEST(differ_from_gpt2 >= 5u);  // the chain is not GPT-2's rule
}

// A pair listed twice in model.merges keeps its last rank, as `tokenizers` (and GPT-2's encoder)
// build a map from the list: "abc" merges a+b first when (b, c) is listed again after (a, b).
BOOST_AUTO_TEST_CASE(duplicate_merges_keep_the_last_rank) {
  const auto t = ByteBpe::from_tokenizer_json_text(
      R"({"model":{"type":"BPE","vocab":{"a":0,"b":1,"c":2,"ab":3,"bc":4},
          "merges":[["b","c"],["a","b"],["b","c"]]},"pre_tokenizer":{"type":"ByteLevel"}})",
      "t.json");
  BOOST_TEST(t.encode("abc") == (std::vector<TokenId>{3, 2}), boost::test_tools::per_element());
  BOOST_TEST(knprobe::testing::throws_with<TokenizerError>(
      [] {
        ByteBpe::from_tokenizer_json_text(
            R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[],"byte_fallback":null},
                "added_tokens":[{"id":0,"content":"x"}]})",
            "t.json");
      },
      {"t.json", "'x' has id 0", "which is the id of 'a'"}));
}

BOOST_AUTO_TEST_CASE(gguf_byte_level_bpe_reads_specials_and_refuses_bad_files) {
  using knprobe::testing::throws_with;
  knprobe::testing::TempDir tmp;
  auto open = [&](const BpeGguf& g) {
    const io::GgufFile f(tmp.write("t.gguf", g.bytes()));
    return ByteBpe::from_gguf(f);
  };
  const auto t = open(BpeGguf::valid());
  BOOST_TEST(t.encode("abab") == (std::vector<TokenId>{2, 2}), boost::test_tools::per_element());
  BOOST_TEST(t.encode("a<s>b") == (std::vector<TokenId>{0, 3, 1}),
             boost::test_tools::per_element());  // a control token is matched whole
  BOOST_TEST(*t.special().bos == 3);
  BOOST_TEST(!t.adds_bos());
  BOOST_TEST(throws_with<TokenizerError>([&] { open(BpeGguf::valid("")); },
                                         {"t.gguf", "tokenizer.ggml.pre is missing"}));
  BOOST_TEST(int(open(BpeGguf::valid("default")).pre_tokenizer()) ==
             int(PreTokenizer::llama_default));
  BOOST_TEST(throws_with<TokenizerError>([&] { open(BpeGguf::valid("tekken")); },
                                         {"t.gguf", "'tekken'", "not implemented"}));
  {  // llama-bpe: BOS unless the file says otherwise (llama.cpp); add_eos_token is refused
    auto g = BpeGguf::valid("llama-bpe");
    BOOST_TEST(open(g).encode("ab") == (std::vector<TokenId>{3, 2}),
               boost::test_tools::per_element());
    g.flag("tokenizer.ggml.add_bos_token", false);
    BOOST_TEST(open(g).encode("ab") == (std::vector<TokenId>{2}), boost::test_tools::per_element());
    g.flag("tokenizer.ggml.add_eos_token", true);
    BOOST_TEST(throws_with<TokenizerError>([&] { open(g); }, {"add_eos_token", "not implemented"}));
  }

  auto g = BpeGguf::valid("tekken");
  BOOST_TEST(
      throws_with<TokenizerError>([&] { open(g); }, {"t.gguf", "tokenizer.ggml.pre", "'tekken'"}));
  g = BpeGguf::valid();
  g.kv.erase(g.kv.begin() + 3);  // merges
  BOOST_TEST(throws_with<TokenizerError>([&] { open(g); }, {"t.gguf", "merges is missing"}));
  g = BpeGguf::valid();
  g.strings("tokenizer.ggml.merges", {"a zz"});
  g.kv.erase(g.kv.begin() + 3);
  BOOST_TEST(throws_with<TokenizerError>([&] { open(g); },
                                         {"t.gguf", "merge 0", "'zz'", "not in the vocabulary"}));
  g = BpeGguf::valid();
  g.strings("tokenizer.ggml.merges", {"b a"});  // "ba" is not a piece
  g.kv.erase(g.kv.begin() + 3);
  BOOST_TEST(throws_with<TokenizerError>(
      [&] { open(g); }, {"t.gguf", "merge 0", "makes a piece not in the vocabulary"}));
  g = BpeGguf::valid();
  g.strings("tokenizer.ggml.merges", {"ab"});
  g.kv.erase(g.kv.begin() + 3);
  BOOST_TEST(throws_with<TokenizerError>([&] { open(g); }, {"t.gguf", "'ab'", "not 'left right'"}));
  g = BpeGguf::valid();
  g.ints("tokenizer.ggml.token_type", {1, 1});
  g.kv.erase(g.kv.begin() + 4);
  BOOST_TEST(throws_with<TokenizerError>([&] { open(g); }, {"token_type has 2 entries for 4"}));
  g = BpeGguf::valid();
  g.u32("tokenizer.ggml.eos_token_id", 99);
  BOOST_TEST(throws_with<FormatError>([&] { open(g); }, {"t.gguf", "eos_token_id", "99"}));
  g = BpeGguf::valid();
  g.kv.pop_back();  // no BOS id
  g.flag("tokenizer.ggml.add_bos_token", true);
  BOOST_TEST(throws_with<TokenizerError>([&] { open(g); }, {"add_bos_token", "no bos_token_id"}));
  g = BpeGguf::valid();
  g.kv.erase(g.kv.begin());
  g.text("tokenizer.ggml.model", "llama");
  BOOST_TEST(throws_with<TokenizerError>([&] { open(g); }, {"'llama'", "expected 'gpt2'"}));
}

// Llama 3's ignore_merges: a word that is itself a piece is one token even when the merges would
// not build it ("abc" with only the merge "a b" → [abc], not [ab, c]); from tokenizer.json and
// GGUF.
BOOST_AUTO_TEST_CASE(ignore_merges_takes_whole_words_from_the_vocabulary) {
  auto json = [](bool ignore) {
    return std::string(R"({"model":{"type":"BPE","ignore_merges":)") + (ignore ? "true" : "false") +
           R"(,"vocab":{"a":0,"b":1,"c":2,"ab":3,"abc":4},"merges":["a b"]},)"
           R"("pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false}})";
  };
  BOOST_TEST(ByteBpe::from_tokenizer_json_text(json(true), "t.json").encode("abc") ==
                 (std::vector<TokenId>{4}),
             boost::test_tools::per_element());
  BOOST_TEST(ByteBpe::from_tokenizer_json_text(json(false), "t.json").encode("abc") ==
                 (std::vector<TokenId>{3, 2}),
             boost::test_tools::per_element());
  knprobe::testing::TempDir tmp;
  for (const std::string pre : {"llama-bpe", "gpt2"}) {
    BpeGguf g;
    g.text("tokenizer.ggml.model", "gpt2");
    g.text("tokenizer.ggml.pre", pre);
    g.strings("tokenizer.ggml.tokens", {"a", "b", "c", "ab", "abc"});
    g.strings("tokenizer.ggml.merges", {"a b"});
    g.flag("tokenizer.ggml.add_bos_token", false);
    const io::GgufFile f(tmp.write("t.gguf", g.bytes()));
    BOOST_TEST(ByteBpe::from_gguf(f).encode("abc") ==
                   (pre == "llama-bpe" ? std::vector<TokenId>{4} : std::vector<TokenId>{3, 2}),
               boost::test_tools::per_element());
  }
}

// Added tokens: at one position the longest wins ("<s>x" over "<s>", as HF and llama.cpp); the
// ByteLevel prefix space goes before every segment between them; many tokens in a long text stay
// linear.
BOOST_AUTO_TEST_CASE(added_tokens_longest_match_prefix_space_and_long_texts) {
  const std::string json =
      R"({"model":{"type":"BPE","vocab":{"a":0,"b":1,"Ġ":2,"<s>":3,"<s>x":4},"merges":[]},)"
      R"("added_tokens":[{"id":3,"content":"<s>"},{"id":4,"content":"<s>x"}],)"
      R"("pre_tokenizer":{"type":"ByteLevel","add_prefix_space":true}})";
  const auto t = ByteBpe::from_tokenizer_json_text(json, "t.json");
  BOOST_TEST(t.encode("a<s>xb") == (std::vector<TokenId>{2, 0, 4, 2, 1}),
             boost::test_tools::per_element());
  BOOST_TEST(t.encode("a<s>b") == (std::vector<TokenId>{2, 0, 3, 2, 1}),
             boost::test_tools::per_element());
  std::string long_text;
  for (int i = 0; i < 20000; ++i) long_text += "<s>xa";
  BOOST_TEST(t.encode(long_text).size() == 60000u);
}

BOOST_AUTO_TEST_CASE(tokenizer_json_post_processors) {
  using knprobe::testing::throws_with;
  auto json = [](const std::string& post) {
    return R"({"model":{"type":"BPE","vocab":{"a":0,"b":1,"<s>":2,"</s>":3},"merges":[]},)"
           R"("added_tokens":[{"id":2,"content":"<s>"},{"id":3,"content":"</s>"}],)"
           R"("post_processor":)" +
           post + "}";
  };
  const auto t = ByteBpe::from_tokenizer_json_text(
      json(R"({"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},)"
           R"({"Sequence":{"id":"A","type_id":0}}],"special_tokens":{"<s>":{"id":"<s>","ids":[2],)"
           R"("tokens":["<s>"]}}})"),
      "t.json");
  BOOST_TEST(t.encode("ab") == (std::vector<TokenId>{2, 0, 1}), boost::test_tools::per_element());
  BOOST_TEST(throws_with<TokenizerError>(
      [&] {
        ByteBpe::from_tokenizer_json_text(
            json(R"({"type":"TemplateProcessing","single":[{"Sequence":{"id":"A","type_id":0}},)"
                 R"({"SpecialToken":{"id":"</s>","type_id":0}}],"special_tokens":{}})"),
            "t.json");
      },
      {"t.json", "post_processor", "only [A] or [special token, A]"}));
  BOOST_TEST(throws_with<TokenizerError>(
      [&] { ByteBpe::from_tokenizer_json_text(json(R"({"type":"RobertaProcessing"})"), "t.json"); },
      {"t.json", "post_processor", "RobertaProcessing"}));
}

BOOST_AUTO_TEST_CASE(tokenizer_json_pre_tokenizers_are_recognised_or_refused) {
  using knprobe::testing::throws_with;
  auto json_with = [](const std::string& pre, const std::string& norm = "null") {
    return R"({"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]},)"
           R"("normalizer":)" +
           norm + R"(,"pre_tokenizer":)" + pre + "}";
  };
  BOOST_TEST(int(ByteBpe::from_tokenizer_json_text(
                     json_with(R"({"type":"ByteLevel","add_prefix_space":false})"), "t.json")
                     .pre_tokenizer()) == int(PreTokenizer::gpt2));
  BOOST_TEST(throws_with<TokenizerError>(
      [&] { ByteBpe::from_tokenizer_json_text(json_with(R"({"type":"Whitespace"})"), "t.json"); },
      {"t.json", "pre_tokenizer", "Whitespace", "not implemented"}));
  BOOST_TEST(throws_with<TokenizerError>(
      [&] {
        ByteBpe::from_tokenizer_json_text(
            json_with(R"({"type":"Sequence","pretokenizers":[{"type":"Split","pattern":)"
                      R"({"Regex":"\\s+"},"behavior":"Isolated","invert":false},)"
                      R"({"type":"ByteLevel","use_regex":false}]})"),
            "t.json");
      },
      {"t.json", "neither Llama 3's nor Qwen 2's"}));
  BOOST_TEST(throws_with<TokenizerError>(
      [&] {
        ByteBpe::from_tokenizer_json_text(
            json_with(R"({"type":"ByteLevel"})", R"({"type":"NFKC"})"), "t.json");
      },
      {"t.json", "normalizer", "NFKC", "not implemented"}));
}

BOOST_AUTO_TEST_SUITE_END()
