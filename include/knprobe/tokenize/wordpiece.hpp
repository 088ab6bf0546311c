#pragma once
// BERT WordPiece (Hugging Face BertTokenizer / tokenizers' BertNormalizer + BertPreTokenizer +
// WordPiece). Normalisation: drop NUL, U+FFFD and control characters, map whitespace to ' ',
// surround CJK ideographs with spaces, lower-case and strip accents (NFD, drop Mn) only when the
// tokenizer says so. Pre-tokenisation: split on whitespace and punctuation (each punctuation
// character its own word). WordPiece: greedy longest match, continuation pieces prefixed "##",
// a word longer than max_input_chars_per_word or not coverable → [UNK].
// Loaded from vocab.txt (+ tokenizer_config.json) or tokenizer.json.

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "knprobe/io/files.hpp"
#include "knprobe/io/json_get.hpp"
#include "knprobe/tokenize/tokenizer.hpp"
#include "knprobe/tokenize/unicode.hpp"

namespace knprobe {

struct WordPieceOptions {
  bool lowercase = false;
  bool strip_accents = false;  ///< follows `lowercase` in BERT unless set explicitly
  bool split_cjk = true;
  int max_input_chars_per_word = 100;
  std::string continuing_prefix = "##";
};

class WordPiece : public Tokenizer {
 public:
  WordPiece(std::vector<std::string> vocab, WordPieceOptions opts) : opts_(std::move(opts)) {
    set_vocabulary(std::move(vocab));
    auto find = [&](const char* s) -> std::optional<TokenId> { return piece_to_id(s); };
    special_.unk = find("[UNK]");
    special_.cls = find("[CLS]");
    special_.sep = find("[SEP]");
    special_.pad = find("[PAD]");
    special_.mask = find("[MASK]");
    special_.bos = special_.cls;
    special_.eos = special_.sep;
    KNPROBE_REQUIRE(special_.unk.has_value(), TokenizerError, "WordPiece vocabulary has no [UNK]");
    for (const char* s : {"[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"})
      if (auto id = find(s)) specials_.push_back(*id);
  }

  /// From a directory with vocab.txt (and optionally tokenizer_config.json for do_lower_case /
  /// strip_accents / tokenize_chinese_chars), or with tokenizer.json.
  static WordPiece from_directory(const std::filesystem::path& dir) {
    if (std::filesystem::exists(dir / "tokenizer.json") &&
        !std::filesystem::exists(dir / "vocab.txt"))
      return from_tokenizer_json(dir / "tokenizer.json");
    const std::string text = io::read_file(dir / "vocab.txt", "vocab.txt", k_max_file);
    std::vector<std::string> vocab;
    std::size_t begin = 0;
    while (begin < text.size()) {
      std::size_t end = text.find('\n', begin);
      if (end == std::string::npos) end = text.size();
      std::string line = text.substr(begin, end - begin);
      begin = end + 1;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      vocab.push_back(std::move(line));
    }
    WordPieceOptions o;
    const auto cfg_path = dir / "tokenizer_config.json";
    if (std::filesystem::exists(cfg_path)) {
      const std::string name = cfg_path.string();
      const auto j =
          io::parse_json(io::read_file(cfg_path, "tokenizer_config.json", k_max_file), name);
      KNPROBE_REQUIRE(j.is_object(), TokenizerError, name, ": not a JSON object");
      read_normalizer(j, "do_lower_case", "strip_accents", "tokenize_chinese_chars", name, o);
    }
    return WordPiece(std::move(vocab), o);
  }

  /// From a Hugging Face tokenizer.json whose model is WordPiece.
  static WordPiece from_tokenizer_json(const std::filesystem::path& file) {
    return from_tokenizer_json_text(io::read_file(file, "tokenizer.json", k_max_file),
                                    file.string());
  }

  /// As from_tokenizer_json, from the file's text (`name` is used in messages). Vocabulary ids
  /// must be the integers 0..n−1, each once.
  static WordPiece from_tokenizer_json_text(std::string_view text, const std::string& name) {
    const auto j = io::parse_json(text, name);
    KNPROBE_REQUIRE(j.is_object() && j.contains("model") && j["model"].is_object() &&
                        j["model"].value("type", nlohmann::json()) == "WordPiece",
                    TokenizerError, name, ": not a WordPiece tokenizer.json");
    const auto& m = j["model"];
    KNPROBE_REQUIRE(m.contains("vocab") && m["vocab"].is_object() && !m["vocab"].empty(),
                    TokenizerError, name, ": model.vocab must be a non-empty object");
    const auto n = m["vocab"].size();
    std::vector<std::string> vocab(n);
    std::vector<bool> seen(n, false);
    for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
      const auto id = io::json_int<std::size_t>(
          it.value(), 0, n - 1, name + ": model.vocab id of '" + it.key().substr(0, 40) + "'");
      KNPROBE_REQUIRE(!seen[id], TokenizerError, name, ": model.vocab gives id ", id,
                      " twice (to '", vocab[id].substr(0, 40), "' and '", it.key().substr(0, 40),
                      "')");
      seen[id] = true;
      vocab[id] = it.key();
    }
    WordPieceOptions o;
    if (m.contains("max_input_chars_per_word"))
      o.max_input_chars_per_word = io::json_int<int>(m["max_input_chars_per_word"], 1, 100000,
                                                     name + ": model.max_input_chars_per_word");
    if (m.contains("continuing_subword_prefix"))
      o.continuing_prefix =
          io::json_string(m["continuing_subword_prefix"], name + ": continuing_subword_prefix");
    if (j.contains("normalizer") && j["normalizer"].is_object())
      read_normalizer(j["normalizer"], "lowercase", "strip_accents", "handle_chinese_chars",
                      name + ": normalizer", o);
    return WordPiece(std::move(vocab), o);
  }

  using Tokenizer::encode;
  /// [CLS] pieces [SEP] (when add_special); "[MASK]" etc. in the text map to their ids.
  std::vector<TokenId> encode(std::string_view text, const EncodeOptions& opts) const override {
    std::vector<TokenId> out;
    if (opts.add_special && special_.cls) out.push_back(*special_.cls);
    std::size_t start = 0;
    std::vector<std::pair<std::string_view, TokenId>> pats;
    if (opts.parse_special)
      for (TokenId id : specials_) pats.emplace_back(piece_text(id), id);
    detail::TokenScanner scan(text, std::move(pats));
    while (start <= text.size()) {
      const auto [best, best_id, best_len] = scan.next(start);
      for (const auto& word : pre_tokenize(text.substr(start, best - start))) wordpiece(word, out);
      if (best_id < 0) break;
      out.push_back(best_id);
      start = best + best_len;
    }
    if (opts.add_special && special_.sep) out.push_back(*special_.sep);
    return out;
  }

  /// Pieces joined with spaces, "##" continuations glued (as HF's WordPiece decoder).
  std::string decode(std::span<const TokenId> ids, bool skip_special = true) const override {
    std::string out;
    for (TokenId id : ids) {
      check_id(id);
      if (skip_special && std::find(specials_.begin(), specials_.end(), id) != specials_.end() &&
          id != *special_.unk)
        continue;
      const std::string_view p = piece_text(id);
      if (p.rfind(opts_.continuing_prefix, 0) == 0) {
        out += p.substr(opts_.continuing_prefix.size());
      } else {
        if (!out.empty()) out += ' ';
        out += p;
      }
    }
    return out;
  }

 private:
  static constexpr std::uintmax_t k_max_file = std::uintmax_t(512) << 20;

  /// Lower-casing, accent stripping (default: as lower-casing) and CJK splitting from JSON keys.
  static void read_normalizer(const nlohmann::json& j, const char* lower, const char* strip,
                              const char* cjk, const std::string& where, WordPieceOptions& o) {
    if (j.contains(lower)) o.lowercase = io::json_bool(j[lower], where + ": " + lower);
    o.strip_accents =
        j.contains(strip) && j[strip].is_boolean() ? j[strip].get<bool>() : o.lowercase;
    if (j.contains(cjk)) o.split_cjk = io::json_bool(j[cjk], where + ": " + cjk);
  }

  static bool is_control(char32_t c) {
    if (c == U'\t' || c == U'\n' || c == U'\r') return false;
    const auto t = u_charType(c);
    return t == U_CONTROL_CHAR || t == U_FORMAT_CHAR;
  }
  static bool is_whitespace(char32_t c) {
    return c == U' ' || c == U'\t' || c == U'\n' || c == U'\r' ||
           u_charType(c) == U_SPACE_SEPARATOR;
  }
  static bool is_punctuation(char32_t c) {
    if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
        (c >= 123 && c <= 126))
      return true;
    return (U_GET_GC_MASK(c) & U_GC_P_MASK) != 0;
  }

  std::vector<std::u32string> pre_tokenize(std::string_view text) const {
    std::u32string norm;
    for (char32_t c : unicode::decode_utf8(text)) {
      if (c == 0 || c == 0xFFFD || is_control(c)) continue;
      if (is_whitespace(c)) {
        norm.push_back(U' ');
      } else if (opts_.split_cjk && unicode::is_cjk(c)) {
        norm += U' ';
        norm.push_back(c);
        norm += U' ';
      } else {
        norm.push_back(c);
      }
    }
    if (opts_.lowercase) norm = unicode::to_lower(norm);
    if (opts_.strip_accents) {
      std::u32string kept;
      for (char32_t c : unicode::nfd(norm))
        if (!unicode::is_mark_nonspacing(c)) kept.push_back(c);
      norm = std::move(kept);
    }
    std::vector<std::u32string> words;
    std::u32string cur;
    auto flush = [&] {
      if (!cur.empty()) words.push_back(std::move(cur));
      cur.clear();
    };
    for (char32_t c : norm) {
      if (is_whitespace(c)) {
        flush();
      } else if (is_punctuation(c)) {
        flush();
        words.push_back(std::u32string(1, c));
      } else {
        cur.push_back(c);
      }
    }
    flush();
    return words;
  }

  void wordpiece(const std::u32string& word, std::vector<TokenId>& out) const {
    if (static_cast<int>(word.size()) > opts_.max_input_chars_per_word) {
      out.push_back(*special_.unk);
      return;
    }
    std::vector<TokenId> pieces;
    std::size_t start = 0;
    while (start < word.size()) {
      std::size_t end = word.size();
      std::optional<TokenId> found;
      while (end > start) {
        std::string sub = unicode::encode_utf8(word.substr(start, end - start));
        if (start > 0) sub = opts_.continuing_prefix + sub;
        if (auto id = piece_to_id(sub)) {
          found = id;
          break;
        }
        --end;
      }
      if (!found) {
        out.push_back(*special_.unk);
        return;
      }
      pieces.push_back(*found);
      start = end;
    }
    out.insert(out.end(), pieces.begin(), pieces.end());
  }

  std::vector<TokenId> specials_;
  WordPieceOptions opts_;
};

}  // namespace knprobe
