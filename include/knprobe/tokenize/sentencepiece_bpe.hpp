#pragma once
// SentencePiece-style BPE with byte fallback, built from GGUF metadata (Llama, Gemma):
// tokenizer.ggml.{tokens, scores, token_type, bos/eos/unknown/padding_token_id, add_bos_token,
// add_space_prefix}. Algorithm as llama.cpp's SPM tokenizer (docs/MODELS.md §2):
//   1. split out control / user-defined token strings (when parse_special);
//   2. optional dummy-prefix space (never for Gemma), every ' ' → '▁' (U+2581);
//   3. merge adjacent symbols by highest piece score (merge_by_score);
//   4. a final symbol that is not a piece is emitted as its UTF-8 bytes <0xXX>.
// Decoding: '▁' → ' ', byte tokens → raw bytes, control tokens skipped.
//
// The same tokenizers as Hugging Face tokenizer.json files (Llama 2, Mistral 7B, Gemma) follow
// the `tokenizers` library instead (from_tokenizer_json):
//   1. split out the added tokens (matched in the raw text, longest first at one position);
//   2. each fragment between them: the normalizer (Prepend("▁"): every fragment; Replace(" ",
//      "▁")), then a Metaspace pre-tokenizer (spaces → '▁', '▁' prepended to the text's first
//      fragment ("first") or to every fragment ("always") unless it already starts with one,
//      words cut before each '▁' when split);
//   3. merge by lowest merge rank (merge_by_rank), not by piece score;
//   4. a character that is not a piece becomes its bytes <0xXX> when byte_fallback (all of them
//      must exist), else <unk> (consecutive ones fused when fuse_unk).
// The file is the reference, as `tokenizers` and SentencePiece read it. transformers 5's
// LlamaTokenizer class replaces a Llama 2 file's Prepend + Replace normalizer by Metaspace("first")
// and so gives other ids where a fragment starts with a space (" Paris": ▁Paris, not ▁ ▁Paris).

#include <algorithm>
#include <array>
#include <cstdio>
#include <string>
#include <unordered_map>
#include <vector>

#include "knprobe/io/files.hpp"
#include "knprobe/io/gguf.hpp"
#include "knprobe/tokenize/score_bpe.hpp"
#include "knprobe/tokenize/tokenizer.hpp"
#include "knprobe/tokenize/tokenizer_json.hpp"
#include "knprobe/tokenize/unicode.hpp"

namespace knprobe {

/// SentencePiece token types as stored in tokenizer.ggml.token_type.
enum class PieceType : std::uint8_t {
  normal = 1,
  unknown = 2,
  control = 3,
  user_defined = 4,
  unused = 5,
  byte = 6
};

class SentencePieceBpe : public Tokenizer {
 public:
  struct Piece {
    std::string text;
    float score = 0.0f;
    PieceType type = PieceType::normal;
  };

  /// Builds from pieces; ids are positions. `add_bos`, `add_space_prefix` as in GGUF metadata.
  SentencePieceBpe(std::vector<Piece> pieces, SpecialTokens special, bool add_bos,
                   bool add_space_prefix)
      : add_bos_(add_bos), add_space_prefix_(add_space_prefix) {
    std::string pool;
    std::vector<std::uint32_t> offsets{0};
    for (const auto& p : pieces) {
      append_piece(pool, offsets, p.text);
      scores_.push_back(p.score);
      types_.push_back(p.type);
    }
    init(std::move(pool), std::move(offsets), special);
  }

  /// Reads the tokenizer stored in a GGUF file (tokenizer.ggml.model must be "llama").
  static SentencePieceBpe from_gguf(const io::GgufFile& f) {
    const std::string model = f.get_string("tokenizer.ggml.model");
    KNPROBE_REQUIRE(
        model == "llama", TokenizerError, f.path(), ": tokenizer.ggml.model is '", model,
        "', expected 'llama' (SentencePiece; 'gpt2' files are read by ByteBpe::from_gguf)");
    std::string pool;
    std::vector<std::uint32_t> offsets{0};
    f.for_each_string("tokenizer.ggml.tokens",
                      [&](std::string_view piece) { append_piece(pool, offsets, piece); });
    const std::size_t n = offsets.size() - 1;
    std::optional<std::vector<float>> scores;
    std::optional<std::vector<std::int64_t>> types;
    if (f.has("tokenizer.ggml.scores")) scores = f.float_array("tokenizer.ggml.scores");
    if (f.has("tokenizer.ggml.token_type")) types = f.int_array("tokenizer.ggml.token_type");
    KNPROBE_REQUIRE((!scores || scores->size() == n) && (!types || types->size() == n),
                    TokenizerError, f.path(), ": tokens, scores and token_type lengths differ");
    SentencePieceBpe t;
    t.scores_ = scores ? std::move(*scores) : std::vector<float>(n, 0.0f);
    t.types_.assign(n, PieceType::normal);
    if (types)
      for (std::size_t i = 0; i < n; ++i) {
        const std::int64_t v = (*types)[i];
        KNPROBE_REQUIRE(v >= 0 && v <= 6, TokenizerError, f.path(), ": token_type ", v,
                        " of piece ", i, " is not a SentencePiece type (0 to 6)");
        t.types_[i] = static_cast<PieceType>(v);
      }
    SpecialTokens sp;
    auto id_of = [&](const char* key) -> std::optional<TokenId> {
      if (!f.has(key)) return std::nullopt;
      return static_cast<TokenId>(f.get_int(key));
    };
    sp.bos = id_of("tokenizer.ggml.bos_token_id");
    sp.eos = id_of("tokenizer.ggml.eos_token_id");
    sp.unk = id_of("tokenizer.ggml.unknown_token_id");
    sp.pad = id_of("tokenizer.ggml.padding_token_id");
    for (std::size_t i = 0; i < n; ++i) {
      const std::string_view p(pool.data() + offsets[i], offsets[i + 1] - offsets[i]);
      if (p == "<mask>" || p == "[MASK]") sp.mask = static_cast<TokenId>(i);
    }
    const bool add_bos = f.has("tokenizer.ggml.add_bos_token")
                             ? f.get_int("tokenizer.ggml.add_bos_token") != 0
                             : true;
    const bool add_space = f.has("tokenizer.ggml.add_space_prefix")
                               ? f.get_int("tokenizer.ggml.add_space_prefix") != 0
                               : true;
    t.add_bos_ = add_bos;
    t.add_space_prefix_ = add_space;
    t.init(std::move(pool), std::move(offsets), sp);
    return t;
  }

  /// Reads a SentencePiece-style BPE tokenizer.json (detail::hf::is_byte_level is false):
  /// model BPE with merges (byte_fallback, fuse_unk, unk_token); normalizer none, Prepend("▁"),
  /// Replace(" " → "▁") or a Sequence of these; pre_tokenizer none, Metaspace("▁", prepend_scheme
  /// first / always / never, split) or Split(" ") after a normalizer that leaves no space (a no-op,
  /// Gemma); post_processor [BOS, A] or [A]. Anything else is refused, naming the field.
  static SentencePieceBpe from_tokenizer_json(const std::filesystem::path& file) {
    const std::string name = file.string();
    return from_tokenizer_json_value(
        io::parse_json(io::read_file(file, "tokenizer.json", std::uintmax_t(1) << 29), name), name);
  }

  /// As from_tokenizer_json, from the parsed file (`name` is used in messages).
  static SentencePieceBpe from_tokenizer_json_value(const nlohmann::json& j,
                                                    const std::string& name) {
    namespace hf = detail::hf;
    KNPROBE_REQUIRE(j.is_object() && j.contains("model") && j["model"].is_object() &&
                        hf::type_of(j["model"]) == "BPE",
                    TokenizerError, name, ": not a BPE tokenizer.json");
    const auto& model = j["model"];
    KNPROBE_REQUIRE(model.contains("vocab") && model["vocab"].is_object() &&
                        model.contains("merges") && model["merges"].is_array(),
                    TokenizerError, name, ": model.vocab must be an object, model.merges an array");
    auto vocab = hf::read_vocab(model["vocab"], name + ": model.vocab");
    auto merges = hf::read_merges(model["merges"], name);
    hf::check_merges(merges, name, [&](const std::string& p) { return vocab.count(p) != 0; });
    SentencePieceBpe t;
    t.from_json_ = true;
    t.ignore_merges_ = hf::read_bpe_options(model, name);
    auto flag = [&](const char* key) {
      return model.contains(key) && !model[key].is_null() &&
             io::json_bool(model[key], name + ": model." + key);
    };
    t.byte_fallback_ = flag("byte_fallback");
    t.fuse_unk_ = flag("fuse_unk");
    const auto added = hf::read_added_tokens(j, name, vocab);
    TokenId max_id = 0;
    for (const auto& [p, id] : vocab) max_id = std::max(max_id, id);
    hf::check_id_range(max_id, vocab.size(), name + ": model.vocab and added_tokens");
    std::vector<std::string> text(static_cast<std::size_t>(max_id) + 1);
    for (const auto& [p, id] : vocab) text[static_cast<std::size_t>(id)] = p;
    t.types_.assign(text.size(), PieceType::normal);
    t.scores_.assign(text.size(), 0.0f);
    if (t.byte_fallback_)  // the pieces named exactly <0x00> .. <0xFF>, as `tokenizers` looks up
      for (int b = 0; b < 256; ++b) {
        char piece[8];
        std::snprintf(piece, sizeof piece, "<0x%02X>", b);
        if (const auto it = vocab.find(piece); it != vocab.end())
          t.types_[static_cast<std::size_t>(it->second)] = PieceType::byte;
      }
    for (const auto& a : added) {
      t.types_[static_cast<std::size_t>(a.id)] =
          a.special ? PieceType::control : PieceType::user_defined;
      if (a.strips) t.stripping_.push_back(a.id);
    }
    SpecialTokens sp;
    if (model.contains("unk_token") && !model["unk_token"].is_null()) {
      const auto& u = io::json_string(model["unk_token"], name + ": model.unk_token");
      const auto it = vocab.find(u);
      KNPROBE_REQUIRE(it != vocab.end(), TokenizerError, name, ": model.unk_token '",
                      u.substr(0, 40), "' is not in the vocabulary");
      sp.unk = it->second;
    }
    for (const auto& a : added) {
      if (!a.special) continue;
      if (a.content == "<s>" || a.content == "<bos>") sp.bos = a.id;
      if (a.content == "</s>" || a.content == "<eos>") sp.eos = a.id;
      if (a.content == "<pad>") sp.pad = a.id;
      if (a.content == "<mask>" || a.content == "[MASK]") sp.mask = a.id;
    }
    t.read_json_normalization(j, name);
    t.add_bos_ = false;
    if (j.contains("post_processor"))
      if (const auto bos =
              hf::read_post_processor(j["post_processor"], name, static_cast<int>(text.size()))) {
        sp.bos = bos;
        t.add_bos_ = true;
      }
    // A pair listed twice keeps its last rank, as `tokenizers` builds its map.
    for (std::size_t r = 0; r < merges.size(); ++r)
      t.ranks_[merges[r].first + '\xFF' + merges[r].second] = static_cast<int>(r);
    std::string pool;
    std::vector<std::uint32_t> offsets{0};
    for (const auto& p : text) append_piece(pool, offsets, p);
    t.init(std::move(pool), std::move(offsets), sp);
    // Added tokens marked normalized are matched inside the normalized text, their own text
    // normalized the same way (Hugging Face's second pass); the others in the raw text.
    if (t.norm_prepend_ || t.norm_replace_)
      for (const auto& a : added) {
        if (!a.normalized) continue;
        t.normalized_added_.emplace_back(t.normalize(a.content, true), a.id);
        std::erase(t.specials_by_length_, a.id);
      }
    return t;
  }

  using Tokenizer::encode;
  std::vector<TokenId> encode(std::string_view text, const EncodeOptions& opts) const override {
    std::vector<TokenId> out;
    if (opts.add_special && add_bos_ && special_.bos) out.push_back(*special_.bos);
    std::size_t start = 0;
    bool first = true;
    std::vector<std::pair<std::string_view, TokenId>> pats;
    if (opts.parse_special)
      for (TokenId id : specials_by_length_) pats.emplace_back(piece_text(id), id);
    detail::TokenScanner scan(text, std::move(pats));
    while (start <= text.size()) {
      const auto [pos, id, len] = scan.next(start);
      if (pos > start) {
        if (!from_json_)
          encode_fragment(text.substr(start, pos - start), first && opts.dummy_prefix, out);
        else
          encode_json_fragment(text.substr(start, pos - start), start == 0, opts, out);
      }
      first = false;
      if (id < 0) break;
      KNPROBE_REQUIRE(std::find(stripping_.begin(), stripping_.end(), id) == stripping_.end(),
                      TokenizerError, "the text contains the added token '", piece_text(id),
                      "', whose lstrip / rstrip / single_word matching is not implemented");
      out.push_back(id);
      start = pos + len;
      first = true;  // a dummy prefix follows a special token, as in llama.cpp
    }
    return out;
  }

  std::string decode(std::span<const TokenId> ids, bool skip_special = true) const override {
    std::string out;
    for (TokenId id : ids) {
      check_id(id);
      const std::string_view text = piece_text(id);
      const PieceType type = types_[static_cast<std::size_t>(id)];
      if (type == PieceType::byte) {
        out.push_back(static_cast<char>(byte_piece_value(text)));
      } else if (type == PieceType::control || type == PieceType::unknown ||
                 type == PieceType::unused) {
        if (!skip_special) out += text;
      } else {
        out += replace_all(text, "\xE2\x96\x81", " ");
      }
    }
    return out;
  }

  /// Text, score and type of piece `id`.
  Piece piece(TokenId id) const {
    check_id(id);
    const auto i = static_cast<std::size_t>(id);
    return {std::string(piece_text(id)), scores_[i], types_[i]};
  }

 private:
  SentencePieceBpe() = default;

  void init(std::string pool, std::vector<std::uint32_t> offsets, const SpecialTokens& special) {
    special_ = special;
    KNPROBE_REQUIRE(offsets.size() >= 2, TokenizerError, "SentencePiece vocabulary is empty");
    set_vocabulary(std::move(pool), std::move(offsets));
    for (std::size_t i = 0; i < types_.size(); ++i) {
      const auto id = static_cast<TokenId>(i);
      const std::string_view p = piece_text(id);
      if (types_[i] == PieceType::byte) {
        const int v = byte_piece_value(p);
        KNPROBE_REQUIRE(v >= 0, TokenizerError, "byte piece ", i, " '", p.substr(0, 40),
                        "' is not <0xXX> (two hexadecimal digits)");
        byte_ids_[static_cast<std::size_t>(v)] = id;
      }
      if ((types_[i] == PieceType::control || types_[i] == PieceType::user_defined) && !p.empty())
        specials_by_length_.push_back(id);
    }
    std::stable_sort(
        specials_by_length_.begin(), specials_by_length_.end(),
        [&](TokenId a, TokenId b) { return piece_text(a).size() > piece_text(b).size(); });
    for (auto* id : {&special_.bos, &special_.eos, &special_.unk, &special_.pad, &special_.mask})
      if (*id) check_id(**id);
  }
  /// The byte of a piece spelled exactly "<0xXX>" (hexadecimal digits of either case), else -1.
  static int byte_piece_value(std::string_view p) {
    auto hex = [](char c) {
      return c >= '0' && c <= '9'   ? c - '0'
             : c >= 'A' && c <= 'F' ? c - 'A' + 10
             : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                    : -1;
    };
    if (p.size() != 6 || p.substr(0, 3) != "<0x" || p[5] != '>') return -1;
    const int hi = hex(p[3]), lo = hex(p[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }
  static std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
    std::string out;
    out.reserve(s.size());
    std::size_t start = 0;
    for (std::size_t p = s.find(from); p != std::string_view::npos; p = s.find(from, start)) {
      out.append(s.substr(start, p - start));
      out.append(to);
      start = p + from.size();
    }
    out.append(s.substr(start));
    return out;
  }

  void encode_fragment(std::string_view frag, bool first, std::vector<TokenId>& out) const {
    std::string s;
    if (add_space_prefix_ && first) s = " ";
    s += frag;
    s = replace_all(s, " ", "\xE2\x96\x81");
    const auto merged = detail::merge_by_score(
        unicode::utf8_chars(s), [&](const std::string& piece) -> std::optional<float> {
          const auto id = piece_to_id(piece);
          if (!id) return std::nullopt;
          const auto i = static_cast<std::size_t>(*id);
          if (types_[i] != PieceType::normal && types_[i] != PieceType::user_defined)
            return std::nullopt;
          return scores_[i];
        });
    for (const auto& sym : merged) {
      const auto id = piece_to_id(sym);
      if (id && types_[static_cast<std::size_t>(*id)] != PieceType::control) {
        out.push_back(*id);
        continue;
      }
      for (unsigned char b : sym) {
        if (byte_ids_[b] >= 0) {
          out.push_back(byte_ids_[b]);
        } else {
          KNPROBE_REQUIRE(special_.unk.has_value(), TokenizerError, "character '", sym,
                          "' is not in the vocabulary and there is neither a byte piece nor <unk>");
          out.push_back(*special_.unk);
          break;
        }
      }
    }
  }

  /// tokenizer.json: normalizer and pre-tokenizer (see the header comment).
  void read_json_normalization(const nlohmann::json& j, const std::string& name) {
    namespace hf = detail::hf;
    const std::string bar = "\xE2\x96\x81";  // '▁'
    auto refuse = [&](const char* field, const nlohmann::json& v) {
      return TokenizerError(detail::concat(name, ": ", field, " ", v.dump().substr(0, 160),
                                           " is not implemented for SentencePiece-style BPE"));
    };
    if (j.contains("normalizer") && !j["normalizer"].is_null()) {
      const auto& n = j["normalizer"];
      std::vector<nlohmann::json> steps;
      if (hf::type_of(n) == "Sequence" && n.contains("normalizers") && n["normalizers"].is_array())
        steps.assign(n["normalizers"].begin(), n["normalizers"].end());
      else
        steps.push_back(n);
      for (const auto& x : steps) {
        if (hf::type_of(x) == "Prepend" && x.value("prepend", nlohmann::json()) == bar) {
          norm_prepend_ = true;
        } else if (hf::type_of(x) == "Replace" && x.contains("pattern") &&
                   x["pattern"].is_object() &&
                   x["pattern"].value("String", nlohmann::json()) == " " &&
                   x.value("content", nlohmann::json()) == bar) {
          norm_replace_ = true;
        } else {
          throw refuse("normalizer", n);
        }
      }
    }
    if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null()) {
      const auto& p = j["pre_tokenizer"];
      if (hf::type_of(p) == "Metaspace" && p.value("replacement", nlohmann::json()) == bar) {
        meta_replace_ = true;
        // Older files say add_prefix_space (default true) instead of prepend_scheme.
        const bool add =
            !p.contains("add_prefix_space") ||
            io::json_bool(p["add_prefix_space"], name + ": pre_tokenizer.add_prefix_space");
        const auto scheme = p.value("prepend_scheme", nlohmann::json(add ? "always" : "never"));
        if (scheme == "first")
          metaspace_prepend_ = MetaspacePrepend::first;
        else if (scheme == "always")
          metaspace_prepend_ = MetaspacePrepend::always;
        else if (scheme != "never")
          throw refuse("pre_tokenizer", p);
        if (p.contains("split"))
          split_words_ = io::json_bool(p["split"], name + ": pre_tokenizer.split");
        else
          split_words_ = true;
      } else if (hf::type_of(p) == "Split" && norm_replace_ && p.contains("pattern") &&
                 p["pattern"].is_object() &&
                 p["pattern"].value("String", nlohmann::json()) == " " &&
                 p.value("invert", nlohmann::json(false)) == false) {
        // The normalizer left no space to split on.
      } else {
        throw refuse("pre_tokenizer", p);
      }
    }
    KNPROBE_REQUIRE(norm_replace_ || meta_replace_, TokenizerError, name,
                    ": neither the normalizer nor the pre_tokenizer writes spaces as '▁' (not a "
                    "SentencePiece-style tokenizer.json)");
  }

  /// The normalizer (Prepend("▁") when `prefix`, Replace(" " → "▁")) applied to `text`.
  std::string normalize(std::string_view text, bool prefix) const {
    std::string s;
    if (prefix && norm_prepend_ && !text.empty()) s = "\xE2\x96\x81";
    s += text;
    return norm_replace_ ? replace_all(s, " ", "\xE2\x96\x81") : s;
  }

  /// One fragment between raw-matched added tokens, as `tokenizers` does (header comment, steps
  /// 2-4): normalized, cut at the normalized added tokens, then pre-tokenized and merged;
  /// `at_start`: the fragment begins the text.
  void encode_json_fragment(std::string_view frag, bool at_start, const EncodeOptions& opts,
                            std::vector<TokenId>& out) const {
    const std::string s = normalize(frag, opts.dummy_prefix);
    std::vector<std::pair<std::string_view, TokenId>> pats;
    if (opts.parse_special)
      for (const auto& [p, id] : normalized_added_) pats.emplace_back(p, id);
    detail::TokenScanner scan(s, std::move(pats));
    for (std::size_t start = 0; start <= s.size();) {
      const auto [pos, id, len] = scan.next(start);
      if (pos > start)
        encode_json_piece(std::string_view(s).substr(start, pos - start), at_start && start == 0,
                          opts.dummy_prefix, out);
      if (id < 0) break;
      out.push_back(id);
      start = pos + len;
    }
  }

  /// A normalized piece: the Metaspace pre-tokenizer, then BPE by merge rank with byte fallback.
  void encode_json_piece(std::string_view piece, bool first, bool prefix,
                         std::vector<TokenId>& out) const {
    const std::string bar = "\xE2\x96\x81";
    std::string s(piece);
    if (meta_replace_) s = replace_all(s, " ", bar);
    const bool meta = metaspace_prepend_ == MetaspacePrepend::always ||
                      (metaspace_prepend_ == MetaspacePrepend::first && first);
    if (prefix && meta && s.rfind(bar, 0) != 0) s = bar + s;
    std::vector<std::string> words;
    if (split_words_) {
      std::size_t a = 0;
      for (std::size_t p = s.find(bar, 1); p != std::string::npos; p = s.find(bar, p + 1))
        words.push_back(s.substr(a, p - a)), a = p;
      words.push_back(s.substr(a));
    } else {
      words.push_back(std::move(s));
    }
    for (const auto& word : words) {
      if (word.empty()) continue;
      bool last_unk = false;  // fuse_unk joins the unknown characters of one word
      const auto whole = ignore_merges_ ? piece_to_id(word) : std::nullopt;
      const auto symbols =
          whole ? std::vector<std::string>{word}
                : detail::merge_by_rank(
                      unicode::utf8_chars(word),
                      [&](const std::string& l, const std::string& r) -> std::optional<int> {
                        const auto it = ranks_.find(l + '\xFF' + r);
                        if (it == ranks_.end()) return std::nullopt;
                        return it->second;
                      });
      for (const auto& sym : symbols) {
        if (const auto id = piece_to_id(sym)) {
          out.push_back(*id);
          last_unk = false;
          continue;
        }
        bool bytes = byte_fallback_;
        for (unsigned char b : sym) bytes = bytes && byte_ids_[b] >= 0;
        if (bytes) {
          for (unsigned char b : sym) out.push_back(byte_ids_[b]);
          last_unk = false;
          continue;
        }
        KNPROBE_REQUIRE(special_.unk.has_value(), TokenizerError, "character '", sym,
                        "' is not in the vocabulary and there is neither a byte piece nor <unk>");
        if (!(fuse_unk_ && last_unk)) out.push_back(*special_.unk);
        last_unk = true;
      }
    }
  }

  enum class MetaspacePrepend { none, first, always };

  std::vector<float> scores_;     ///< by id
  std::vector<PieceType> types_;  ///< by id
  std::array<TokenId, 256> byte_ids_ = filled_minus_one();
  std::vector<TokenId> specials_by_length_;
  bool add_bos_ = true;
  bool add_space_prefix_ = false;
  bool from_json_ = false;  ///< read from a tokenizer.json: the members below apply
  std::unordered_map<std::string, int> ranks_;  ///< "left\xFFright" → merge rank
  std::vector<TokenId> stripping_;              ///< added tokens with lstrip / rstrip / single_word
  bool norm_prepend_ = false;                   ///< normalizer Prepend("▁")
  bool norm_replace_ = false;                   ///< normalizer Replace(" " → "▁")
  bool meta_replace_ = false;                   ///< Metaspace pre-tokenizer (' ' → '▁')
  /// Added tokens matched in the normalized text: their normalized text and id.
  std::vector<std::pair<std::string, TokenId>> normalized_added_;
  MetaspacePrepend metaspace_prepend_ = MetaspacePrepend::none;
  bool split_words_ = false;  ///< Metaspace split: a word starts at every '▁'
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;

  static std::array<TokenId, 256> filled_minus_one() {
    std::array<TokenId, 256> a{};
    a.fill(-1);
    return a;
  }
};

}  // namespace knprobe
