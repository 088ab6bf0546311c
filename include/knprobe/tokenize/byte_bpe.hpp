#pragma once
// Byte-level BPE (GPT-2, mGPT, Llama 3, Qwen 2, SmolLM; Hugging Face ByteLevel + BPE model, GGUF
// tokenizer.ggml.model "gpt2"):
//   1. split out added / special tokens (e.g. "<|endoftext|>") when parse_special;
//   2. pre-tokenise with the file's rule (pre_tokenize.hpp: gpt2, llama3, qwen2, smollm);
//   3. map every byte of a pre-token to a printable code point (bytes_to_unicode);
//   4. merge adjacent symbols by lowest merge rank until none applies; look up ids.
// Whitespace is part of the tokens: " Paris" (with its space, as after "is") and "Paris" are
// different ids. Nothing is prepended unless the tokenizer declares add_prefix_space; BOS only
// where the file asks for it (GGUF tokenizer.ggml.add_bos_token).

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "knprobe/io/files.hpp"
#include "knprobe/io/gguf.hpp"
#include "knprobe/io/json_get.hpp"
#include "knprobe/tokenize/pre_tokenize.hpp"
#include "knprobe/tokenize/tokenizer.hpp"
#include "knprobe/tokenize/tokenizer_json.hpp"
#include "knprobe/tokenize/unicode.hpp"

namespace knprobe {

class ByteBpe : public Tokenizer {
 public:
  /// vocab: piece → id; merges in rank order as ("left", "right") pairs of byte-mapped strings.
  ByteBpe(std::unordered_map<std::string, TokenId> vocab,
          std::vector<std::pair<std::string, std::string>> merges,
          std::vector<std::string> added_tokens = {}, bool add_prefix_space = false,
          PreTokenizer rule = PreTokenizer::gpt2)
      : add_prefix_space_(add_prefix_space), rule_(rule) {
    KNPROBE_REQUIRE(!vocab.empty(), TokenizerError, "byte-level BPE vocabulary is empty");
    TokenId max_id = 0;
    for (const auto& [p, id] : vocab) {
      KNPROBE_REQUIRE(id >= 0 && id < (1 << 24), TokenizerError, "id ", id, " of piece '", p,
                      "' is out of range");
      max_id = std::max(max_id, id);
    }
    detail::hf::check_id_range(max_id, vocab.size(), "byte-level BPE vocabulary");
    std::vector<std::string> text(static_cast<std::size_t>(max_id) + 1);
    for (const auto& [p, id] : vocab) text[static_cast<std::size_t>(id)] = p;
    set_vocabulary(std::move(text));
    set_merges(merges);
    build_byte_tables();
    for (auto& t : added_tokens) {
      auto id = piece_to_id(t);
      KNPROBE_REQUIRE(id.has_value(), TokenizerError, "added token '", t, "' has no id");
      added_.push_back(*id);
    }
    if (auto eot = piece_to_id("<|endoftext|>")) {
      special_.bos = special_.eos = eot;
      if (std::find(added_.begin(), added_.end(), *eot) == added_.end()) added_.push_back(*eot);
    }
    if (auto unk = piece_to_id("<unk>")) special_.unk = unk;
    if (auto pad = piece_to_id("<pad>")) special_.pad = pad;
  }

  /// Reads the tokenizer stored in a GGUF file (tokenizer.ggml.model "gpt2"): tokens (id order),
  /// merges ("left right", rank order), token_type (3 control and 4 user-defined tokens are
  /// matched whole in the text), pre (the pre-tokenisation rule: default, gpt2, llama-bpe,
  /// qwen2 or smollm; absent or another name is refused), bos / eos / unknown / padding ids,
  /// add_bos_token (default: true for llama-bpe, as llama.cpp); add_eos_token = true is refused.
  static ByteBpe from_gguf(const io::GgufFile& f) {
    const std::string& model = f.get_string("tokenizer.ggml.model");
    KNPROBE_REQUIRE(model == "gpt2", TokenizerError, f.path(), ": tokenizer.ggml.model is '",
                    model.substr(0, 64), "', expected 'gpt2' (byte-level BPE)");
    KNPROBE_REQUIRE(
        f.has("tokenizer.ggml.pre"), TokenizerError, f.path(),
        ": tokenizer.ggml.pre is missing: the pre-tokenisation rule is unknown "
        "(llama.cpp falls back to its 'default' chain and warns that the file predates the "
        "key: name the rule)");
    PreTokenizer rule = PreTokenizer::gpt2;
    try {
      rule = pre_tokenizer_from_gguf_name(f.get_string("tokenizer.ggml.pre"));
    } catch (const TokenizerError& e) {
      throw TokenizerError(detail::concat(f.path(), ": tokenizer.ggml.pre: ", e.what()));
    }
    std::vector<std::string> pieces;
    f.for_each_string("tokenizer.ggml.tokens", [&](std::string_view t) {
      KNPROBE_REQUIRE(pieces.size() < std::size_t(k_max_id), TokenizerError, f.path(),
                      ": more than ", k_max_id, " tokens");
      pieces.emplace_back(t);
    });
    KNPROBE_REQUIRE(!pieces.empty(), TokenizerError, f.path(), ": tokenizer.ggml.tokens is empty");
    KNPROBE_REQUIRE(f.has("tokenizer.ggml.merges"), TokenizerError, f.path(),
                    ": tokenizer.ggml.merges is missing (a byte-level BPE tokenizer needs them)");
    std::vector<std::pair<std::string, std::string>> merges;
    f.for_each_string("tokenizer.ggml.merges", [&](std::string_view m) {
      const auto sp = m.find(' ');
      KNPROBE_REQUIRE(sp != std::string_view::npos, TokenizerError, f.path(),
                      ": tokenizer.ggml.merges entry ", merges.size(), " ('",
                      std::string(m.substr(0, 80)), "') is not 'left right'");
      merges.emplace_back(std::string(m.substr(0, sp)), std::string(m.substr(sp + 1)));
    });
    std::vector<std::int64_t> types;
    if (f.has("tokenizer.ggml.token_type")) {
      types = f.int_array("tokenizer.ggml.token_type");
      KNPROBE_REQUIRE(types.size() == pieces.size(), TokenizerError, f.path(),
                      ": tokenizer.ggml.token_type has ", types.size(), " entries for ",
                      pieces.size(), " tokens");
    }
    ByteBpe t(std::move(pieces), f.path() + ": tokenizer.ggml");
    t.rule_ = rule;
    t.ignore_merges_ = rule == PreTokenizer::llama3;  // as llama.cpp (and Llama 3's tokenizer.json)
    t.nfc_ = rule == PreTokenizer::qwen2;  // Qwen 2's tokenizer.json normalises to NFC first
    detail::hf::check_merges(merges, f.path() + ": tokenizer.ggml.merges",
                             [&](const std::string& p) { return t.piece_to_id(p).has_value(); });
    t.set_merges(merges, /*first_wins=*/true);
    for (std::size_t i = 0; i < types.size(); ++i)
      if ((types[i] == 3 || types[i] == 4) && !t.piece_text(static_cast<TokenId>(i)).empty())
        t.added_.push_back(static_cast<TokenId>(i));
    auto id_of = [&](const char* key) -> std::optional<TokenId> {
      if (!f.has(key)) return std::nullopt;
      return static_cast<TokenId>(f.get_int_in(key, 0, t.vocab_size() - 1));
    };
    t.special_ = {};
    t.special_.bos = id_of("tokenizer.ggml.bos_token_id");
    t.special_.eos = id_of("tokenizer.ggml.eos_token_id");
    t.special_.unk = id_of("tokenizer.ggml.unknown_token_id");
    t.special_.pad = id_of("tokenizer.ggml.padding_token_id");
    // llama.cpp: BOS by default for llama-bpe, else not; the key decides when present. A space
    // prefix is not applied to byte-level BPE (add_space_prefix is ignored there, as llama.cpp).
    t.add_bos_ = f.get_bool("tokenizer.ggml.add_bos_token", rule == PreTokenizer::llama3);
    KNPROBE_REQUIRE(!t.add_bos_ || t.special_.bos, TokenizerError, f.path(),
                    ": tokenizer.ggml.add_bos_token is true but there is no bos_token_id");
    KNPROBE_REQUIRE(!f.get_bool("tokenizer.ggml.add_eos_token", false), TokenizerError, f.path(),
                    ": tokenizer.ggml.add_eos_token = true is not implemented (an EOS after the "
                    "prompt would change every probability)");
    return t;
  }

  PreTokenizer pre_tokenizer() const { return rule_; }
  /// Whether encode() with add_special puts BOS first.
  bool adds_bos() const { return add_bos_; }

  /// From vocab.json + merges.txt in a directory, else from its tokenizer.json.
  static ByteBpe from_directory(const std::filesystem::path& dir) {
    if (!std::filesystem::exists(dir / "vocab.json") &&
        std::filesystem::exists(dir / "tokenizer.json"))
      return from_tokenizer_json(dir / "tokenizer.json");
    const std::string vname = (dir / "vocab.json").string(), mname = (dir / "merges.txt").string();
    const auto j =
        io::parse_json(io::read_file(dir / "vocab.json", "vocab.json", k_max_file), vname);
    KNPROBE_REQUIRE(j.is_object(), TokenizerError, vname, ": not a JSON object");
    auto vocab = detail::hf::read_vocab(j, vname);
    const std::string text = io::read_file(dir / "merges.txt", "merges.txt", k_max_file);
    std::vector<std::pair<std::string, std::string>> merges;
    std::size_t n = 0, begin = 0;
    while (begin < text.size()) {
      std::size_t end = text.find('\n', begin);
      if (end == std::string::npos) end = text.size();
      std::string line = text.substr(begin, end - begin);
      begin = end + 1;
      ++n;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.rfind("#version", 0) == 0 || line.empty()) continue;
      const auto sp = line.find(' ');
      KNPROBE_REQUIRE(sp != std::string::npos, TokenizerError, mname, ":", n,
                      ": malformed merge line '", line.substr(0, 80), "'");
      merges.emplace_back(line.substr(0, sp), line.substr(sp + 1));
    }
    check_merges(vocab, merges, mname);
    return ByteBpe(std::move(vocab), std::move(merges));
  }

  static ByteBpe from_tokenizer_json(const std::filesystem::path& file) {
    return from_tokenizer_json_text(io::read_file(file, "tokenizer.json", k_max_file),
                                    file.string());
  }

  /// As from_tokenizer_json, from the file's text (`name` is used in messages).
  static ByteBpe from_tokenizer_json_text(std::string_view text, const std::string& name) {
    return from_tokenizer_json_value(io::parse_json(text, name), name);
  }

  /// As from_tokenizer_json, from the parsed file.
  static ByteBpe from_tokenizer_json_value(const nlohmann::json& j, const std::string& name) {
    KNPROBE_REQUIRE(j.is_object() && j.contains("model") && j["model"].is_object() &&
                        j["model"].value("type", nlohmann::json()) == "BPE",
                    TokenizerError, name, ": not a BPE tokenizer.json");
    const auto& model = j["model"];
    KNPROBE_REQUIRE(model.contains("vocab") && model["vocab"].is_object() &&
                        model.contains("merges") && model["merges"].is_array(),
                    TokenizerError, name, ": model.vocab must be an object, model.merges an array");
    KNPROBE_REQUIRE(!model.contains("byte_fallback") || model["byte_fallback"].is_null() ||
                        !io::json_bool(model["byte_fallback"], name + ": model.byte_fallback"),
                    TokenizerError, name,
                    ": model.byte_fallback is a SentencePiece-style option, not byte-level BPE");
    auto vocab = detail::hf::read_vocab(model["vocab"], name + ": model.vocab");
    auto merges = detail::hf::read_merges(model["merges"], name);
    check_merges(vocab, merges, name);
    const bool ignore_merges = detail::hf::read_bpe_options(model, name);
    std::vector<std::string> added;
    std::vector<std::string> stripping;
    for (auto& a : detail::hf::read_added_tokens(j, name, vocab)) {
      if (a.strips) stripping.push_back(a.content);
      added.push_back(std::move(a.content));
    }
    bool prefix = false;
    const PreTokenizer rule = read_hf_pre_tokenizer(j, name, prefix);
    bool nfc = false;
    if (j.contains("normalizer") && !j["normalizer"].is_null()) {
      KNPROBE_REQUIRE(detail::hf::type_of(j["normalizer"]) == "NFC", TokenizerError, name,
                      ": normalizer ", j["normalizer"].dump().substr(0, 80),
                      " is not implemented for byte-level BPE (only none or NFC)");
      nfc = true;
    }
    ByteBpe t(std::move(vocab), std::move(merges), std::move(added), prefix, rule);
    t.nfc_ = nfc;
    t.ignore_merges_ = ignore_merges;
    for (const auto& c : stripping) t.stripping_.push_back(*t.piece_to_id(c));
    if (j.contains("post_processor"))
      if (const auto bos =
              detail::hf::read_post_processor(j["post_processor"], name, t.vocab_size())) {
        t.special_.bos = bos;
        t.add_bos_ = true;
      }
    return t;
  }

  using Tokenizer::encode;
  /// Ids of `text` exactly as written; BOS first when the file asks for it and add_special.
  std::vector<TokenId> encode(std::string_view text, const EncodeOptions& opts) const override {
    std::vector<TokenId> out;
    if (add_bos_ && opts.add_special) out.push_back(*special_.bos);
    std::size_t start = 0;
    std::vector<std::pair<std::string_view, TokenId>> pats;
    if (opts.parse_special)
      for (TokenId id : added_) pats.emplace_back(piece_text(id), id);
    detail::TokenScanner scan(text, std::move(pats));
    while (start <= text.size()) {
      const auto [best, best_id, best_len] = scan.next(start);
      const std::string_view piece = text.substr(start, best - start);
      std::string frag;
      frag.reserve(piece.size() + 1);
      // Hugging Face's ByteLevel(add_prefix_space) prefixes every segment between added tokens.
      if (add_prefix_space_ && !piece.empty() && piece[0] != ' ') frag.push_back(' ');
      if (nfc_)
        frag.append(unicode::encode_utf8(unicode::nfc(unicode::decode_utf8(piece))));
      else
        frag.append(piece);
      for (const auto& word : knprobe::pre_tokenize(frag, rule_)) bpe(word, out);
      if (best_id < 0) break;
      KNPROBE_REQUIRE(std::find(stripping_.begin(), stripping_.end(), best_id) == stripping_.end(),
                      TokenizerError, "the text contains the added token '", piece_text(best_id),
                      "', whose lstrip / rstrip / single_word matching is not implemented");
      out.push_back(best_id);
      start = best + best_len;
    }
    return out;
  }

  std::string decode(std::span<const TokenId> ids, bool skip_special = true) const override {
    std::string out;
    for (TokenId id : ids) {
      check_id(id);
      const bool is_added = std::find(added_.begin(), added_.end(), id) != added_.end();
      if (is_added) {
        if (!skip_special) out += piece_text(id);
        continue;
      }
      for (char32_t c : unicode::decode_utf8(piece_text(id))) {
        auto it = unicode_to_byte_.find(c);
        KNPROBE_REQUIRE(it != unicode_to_byte_.end(), TokenizerError, "piece '", piece_text(id),
                        "' is not byte-level encoded");
        out.push_back(static_cast<char>(it->second));
      }
    }
    return out;
  }

  /// The GPT-2 pre-tokenisation of `text` (exposed for tests).
  static std::vector<std::string> pre_tokenize(std::string_view text) {
    return knprobe::pre_tokenize(text, PreTokenizer::gpt2);
  }

 private:
  static constexpr std::uintmax_t k_max_file = std::uintmax_t(512) << 20;
  static constexpr TokenId k_max_id = (1 << 24) - 1;

  /// The pre-tokenisation rule of a tokenizer.json (`prefix` gets ByteLevel's add_prefix_space):
  /// ByteLevel(use_regex) → gpt2; Sequence[Digits(individual_digits), ByteLevel(use_regex)] →
  /// smollm; Sequence[Split(Regex of llama3 / qwen2, Isolated), ByteLevel(no regex)] → llama3 /
  /// qwen2. No pre_tokenizer key at all is read as gpt2 (minimal files); anything else is refused.
  static PreTokenizer read_hf_pre_tokenizer(const nlohmann::json& j, const std::string& name,
                                            bool& prefix) {
    if (!j.contains("pre_tokenizer")) return PreTokenizer::gpt2;
    const auto& p = j["pre_tokenizer"];
    auto refuse = [&](const std::string& why) {
      return TokenizerError(detail::concat(name, ": pre_tokenizer ", p.dump().substr(0, 160),
                                           " is not implemented (", why, ")"));
    };
    auto type = [](const nlohmann::json& x) {
      return x.is_object() && x.contains("type") && x["type"].is_string()
                 ? x["type"].get<std::string>()
                 : std::string();
    };
    auto byte_level = [&](const nlohmann::json& x, bool regex) {
      if (type(x) != "ByteLevel") return false;
      if (x.contains("add_prefix_space"))
        prefix = io::json_bool(x["add_prefix_space"], name + ": pre_tokenizer.add_prefix_space");
      const bool uses = !x.contains("use_regex") ||
                        io::json_bool(x["use_regex"], name + ": pre_tokenizer.use_regex");
      return uses == regex;
    };
    if (byte_level(p, true)) return PreTokenizer::gpt2;
    if (type(p) != "Sequence" || !p.contains("pretokenizers") || !p["pretokenizers"].is_array() ||
        p["pretokenizers"].size() != 2)
      throw refuse("expected ByteLevel or a Sequence of two");
    const auto& a = p["pretokenizers"][0];
    const auto& b = p["pretokenizers"][1];
    if (type(a) == "Digits" && a.value("individual_digits", nlohmann::json()) == true &&
        byte_level(b, true))
      return PreTokenizer::smollm;
    if (type(a) == "Split" && byte_level(b, false) &&
        a.value("behavior", nlohmann::json()) == "Isolated" &&
        a.value("invert", nlohmann::json(false)) == false && a.contains("pattern") &&
        a["pattern"].is_object() && a["pattern"].contains("Regex") &&
        a["pattern"]["Regex"].is_string()) {
      const auto re = a["pattern"]["Regex"].get<std::string>();
      static const std::string head = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|)";
      static const std::string tail = R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
      if (re == head + R"(\p{N}{1,3})" + tail) return PreTokenizer::llama3;
      if (re == head + R"(\p{N})" + tail) return PreTokenizer::qwen2;
      throw refuse("the Split regex is neither Llama 3's nor Qwen 2's");
    }
    throw refuse("unknown sequence");
  }

  /// Pieces by id (GGUF order; a repeated text keeps its first id for lookups).
  ByteBpe(std::vector<std::string> pieces, const std::string& where) {
    KNPROBE_REQUIRE(!pieces.empty(), TokenizerError, where, ": the vocabulary is empty");
    set_vocabulary(pieces);
    build_byte_tables();
  }

  /// A pair listed twice keeps its last rank (Hugging Face and GPT-2's encoder build a map from
  /// the list), or its first when `first_wins` (llama.cpp's GGUF reader).
  void set_merges(const std::vector<std::pair<std::string, std::string>>& merges,
                  bool first_wins = false) {
    ranks_.clear();
    ranks_.reserve(merges.size());
    for (std::size_t r = 0; r < merges.size(); ++r) {
      const std::string key = merges[r].first + ' ' + merges[r].second;
      if (first_wins)
        ranks_.emplace(key, static_cast<int>(r));
      else
        ranks_[key] = static_cast<int>(r);
    }
  }

  /// Every merge must join two pieces of the vocabulary and make a third.
  static void check_merges(const std::unordered_map<std::string, TokenId>& vocab,
                           const std::vector<std::pair<std::string, std::string>>& merges,
                           const std::string& where) {
    detail::hf::check_merges(merges, where,
                             [&](const std::string& p) { return vocab.count(p) != 0; });
  }

  void build_byte_tables() {
    std::vector<int> bs;
    for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
    for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
    for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
    std::array<char32_t, 256> map{};
    std::array<bool, 256> direct{};
    for (int b : bs) map[b] = static_cast<char32_t>(b), direct[b] = true;
    int extra = 0;
    for (int b = 0; b < 256; ++b)
      if (!direct[b]) map[b] = static_cast<char32_t>(256 + extra++);
    for (int b = 0; b < 256; ++b) {
      byte_to_unicode_[b].clear();
      unicode::append_utf8(byte_to_unicode_[b], map[b]);
      unicode_to_byte_[map[b]] = static_cast<unsigned char>(b);
    }
  }

  void bpe(const std::string& word, std::vector<TokenId>& out) const {
    std::vector<std::string> sym;
    for (unsigned char b : word) sym.push_back(byte_to_unicode_[b]);
    if (ignore_merges_ && sym.size() > 1) {  // a whole word in the vocabulary is one token
      std::string whole;
      for (const auto& x : sym) whole += x;
      if (const auto id = piece_to_id(whole)) {
        out.push_back(*id);
        return;
      }
    }
    while (sym.size() > 1) {
      int best_rank = INT32_MAX;
      std::size_t best = 0;
      for (std::size_t i = 0; i + 1 < sym.size(); ++i) {
        auto it = ranks_.find(sym[i] + ' ' + sym[i + 1]);
        if (it != ranks_.end() && it->second < best_rank) best_rank = it->second, best = i;
      }
      if (best_rank == INT32_MAX) break;
      // Merge every occurrence of the best pair, left to right.
      const std::string a = sym[best], b = sym[best + 1];
      std::vector<std::string> next;
      for (std::size_t i = 0; i < sym.size();) {
        if (i + 1 < sym.size() && sym[i] == a && sym[i + 1] == b) {
          next.push_back(a + b);
          i += 2;
        } else {
          next.push_back(sym[i++]);
        }
      }
      sym = std::move(next);
    }
    for (const auto& s : sym) {
      auto id = piece_to_id(s);
      if (!id) {
        KNPROBE_REQUIRE(special_.unk.has_value(), TokenizerError, "byte-level BPE: piece '", s,
                        "' is not in the vocabulary");
        id = special_.unk;
      }
      out.push_back(*id);
    }
  }

  std::unordered_map<std::string, int> ranks_;
  std::array<std::string, 256> byte_to_unicode_;
  std::map<char32_t, unsigned char> unicode_to_byte_;
  std::vector<TokenId> added_;
  std::vector<TokenId> stripping_;  ///< added tokens with lstrip / rstrip / single_word
  bool add_prefix_space_ = false;
  bool add_bos_ = false;
  bool nfc_ = false;            ///< NFC-normalise the text first (Qwen 2 tokenizer.json)
  bool ignore_merges_ = false;  ///< a word that is a vocabulary piece is not merged (Llama 3)
  PreTokenizer rule_ = PreTokenizer::gpt2;
};

}  // namespace knprobe
