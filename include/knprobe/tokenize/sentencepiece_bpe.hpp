#pragma once
// SentencePiece-style BPE with byte fallback, built from GGUF metadata (Llama, Gemma):
// tokenizer.ggml.{tokens, scores, token_type, bos/eos/unknown/padding_token_id, add_bos_token,
// add_space_prefix}. Algorithm as llama.cpp's SPM tokenizer (MODELS.md §2):
//   1. split out control / user-defined token strings (when parse_special);
//   2. optional dummy-prefix space (never for Gemma), every ' ' → '▁' (U+2581);
//   3. merge adjacent symbols by highest piece score (merge_by_score);
//   4. a final symbol that is not a piece is emitted as its UTF-8 bytes <0xXX>.
// Decoding: '▁' → ' ', byte tokens → raw bytes, control tokens skipped.

#include <algorithm>
#include <array>
#include <cstdio>
#include <string>
#include <unordered_map>
#include <vector>

#include "knprobe/io/gguf.hpp"
#include "knprobe/tokenize/score_bpe.hpp"
#include "knprobe/tokenize/tokenizer.hpp"
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

  using Tokenizer::encode;
  std::vector<TokenId> encode(std::string_view text, const EncodeOptions& opts) const override {
    std::vector<TokenId> out;
    if (opts.add_special && add_bos_ && special_.bos) out.push_back(*special_.bos);
    std::size_t start = 0;
    bool first = true;
    while (start <= text.size()) {
      auto [pos, id] =
          opts.parse_special ? find_special(text, start) : std::pair{text.size(), TokenId(-1)};
      if (pos > start)
        encode_fragment(text.substr(start, pos - start), first && opts.dummy_prefix, out);
      first = false;
      if (id < 0) break;
      out.push_back(id);
      start = pos + piece_text(id).size();
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
        out.push_back(static_cast<char>(std::stoi(std::string(text.substr(3, 2)), nullptr, 16)));
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
        unsigned v = 0;
        KNPROBE_REQUIRE(p.size() == 6 && std::sscanf(std::string(p).c_str(), "<0x%2X>", &v) == 1,
                        TokenizerError, "byte piece ", i, " '", p, "' is not <0xXX>");
        byte_ids_[v] = id;
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

  /// The earliest (then longest) control / user-defined token string at or after `start`.
  std::pair<std::size_t, TokenId> find_special(std::string_view text, std::size_t start) const {
    std::size_t best = text.size();
    TokenId best_id = -1;
    for (TokenId id : specials_by_length_) {
      const auto pos = text.find(piece_text(id), start);
      if (pos != std::string_view::npos && pos < best) {
        best = pos;
        best_id = id;
      }
    }
    return {best, best_id};
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

  std::vector<float> scores_;     ///< by id
  std::vector<PieceType> types_;  ///< by id
  std::array<TokenId, 256> byte_ids_ = filled_minus_one();
  std::vector<TokenId> specials_by_length_;
  bool add_bos_ = true;
  bool add_space_prefix_ = false;

  static std::array<TokenId, 256> filled_minus_one() {
    std::array<TokenId, 256> a{};
    a.fill(-1);
    return a;
  }
};

}  // namespace knprobe
