#pragma once
// One interface for every tokenizer family: encode(text) → ids, decode(ids) → text, special ids.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "knprobe/core/tensor.hpp"

namespace knprobe {

/// Ids of the special tokens a tokenizer defines (absent ones are nullopt).
struct SpecialTokens {
  std::optional<TokenId> bos, eos, unk, pad, mask, cls, sep;
};

struct EncodeOptions {
  /// Add the family's framing tokens: BOS for SentencePiece / llama2.c, [CLS] … [SEP] for
  /// WordPiece. Byte-level BPE (GPT-2) adds nothing by default.
  bool add_special = true;
  /// Match special / control token strings in the text (e.g. "[MASK]", "<start_of_turn>").
  bool parse_special = true;
  /// Prepend the SentencePiece dummy-prefix space where the tokenizer uses one (llama2.c, SPM
  /// with add_space_prefix). Off for a continuation such as an answer that already carries its
  /// leading space.
  bool dummy_prefix = true;
};

/// Abstract tokenizer. Byte-level BPE is whitespace-sensitive: " Paris" and "Paris" are
/// different tokens; answers that follow a space in the prompt must be encoded with their space.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<TokenId> encode(std::string_view text, const EncodeOptions& opts) const = 0;
  std::vector<TokenId> encode(std::string_view text) const { return encode(text, {}); }
  /// Text of the ids; special tokens are skipped when `skip_special`.
  virtual std::string decode(std::span<const TokenId> ids, bool skip_special = true) const = 0;
  int vocab_size() const { return static_cast<int>(offsets_.size()) - 1; }
  /// The id of a vocabulary piece (in the family's own spelling, e.g. "▁Paris", "##ing", "ĠParis").
  std::optional<TokenId> piece_to_id(std::string_view piece) const {
    if (slots_.empty()) return std::nullopt;
    const std::size_t mask = slots_.size() - 1;
    const std::uint64_t h = hash(piece);
    const auto tag = static_cast<std::uint32_t>(h >> 32);
    for (std::size_t i = h & mask;; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (s.id < 0) return std::nullopt;
      if (s.tag == tag && piece_text(s.id) == piece) return s.id;
    }
  }
  /// The text of piece `id` (a view into the tokenizer; valid while it lives).
  std::string_view id_to_piece(TokenId id) const {
    check_id(id);
    return piece_text(id);
  }
  const SpecialTokens& special() const { return special_; }

 protected:
  /// Sets the vocabulary: piece text by id. A repeated text keeps its first id; "" is not indexed.
  void set_vocabulary(const std::vector<std::string>& text) {
    std::string pool;
    std::vector<std::uint32_t> offsets{0};
    for (const auto& t : text) append_piece(pool, offsets, t);
    set_vocabulary(std::move(pool), std::move(offsets));
  }

  /// Appends one piece to a (pool, offsets) vocabulary under construction.
  static void append_piece(std::string& pool, std::vector<std::uint32_t>& offsets,
                           std::string_view piece) {
    KNPROBE_REQUIRE(pool.size() + piece.size() < (std::size_t(1) << 32), TokenizerError,
                    "the vocabulary text exceeds 4 GiB");
    pool.append(piece);
    offsets.push_back(static_cast<std::uint32_t>(pool.size()));
  }

  /// Sets the vocabulary from all piece texts concatenated (`pool`) and the n + 1 offsets of
  /// their starts (offsets[0] = 0, offsets[n] = pool.size()).
  void set_vocabulary(std::string pool, std::vector<std::uint32_t> offsets) {
    KNPROBE_REQUIRE(offsets.size() >= 2, TokenizerError, "the vocabulary is empty");
    pool_ = std::move(pool);
    offsets_ = std::move(offsets);
    const std::size_t count = offsets_.size() - 1;
    // Open addressing, linear probing, load factor ≤ 1/2; slots hold ids (copies stay valid).
    std::size_t n = 16;
    while (n < 2 * count) n *= 2;
    slots_.assign(n, Slot{});
    std::vector<std::uint64_t> hashes(count);
    for (std::size_t i = 0; i < count; ++i) hashes[i] = hash(piece_text(static_cast<TokenId>(i)));
    constexpr std::size_t ahead = 16;  // prefetch the slot of a later piece: the table is large
    for (std::size_t i = 0; i < count; ++i) {
      if (i + ahead < count) __builtin_prefetch(&slots_[hashes[i + ahead] & (n - 1)], 1);
      const std::string_view text = piece_text(static_cast<TokenId>(i));
      if (text.empty()) continue;
      const std::uint64_t h = hashes[i];
      const auto tag = static_cast<std::uint32_t>(h >> 32);
      for (std::size_t j = h & (n - 1);; j = (j + 1) & (n - 1)) {
        Slot& s = slots_[j];
        if (s.id < 0) {
          s = Slot{tag, static_cast<TokenId>(i)};
          break;
        }
        if (s.tag == tag && piece_text(s.id) == text) break;  // repeated text: first id
      }
    }
  }
  /// Unchecked piece text (ids already validated).
  std::string_view piece_text(TokenId id) const {
    const auto i = static_cast<std::size_t>(id);
    return std::string_view(pool_).substr(offsets_[i], offsets_[i + 1] - offsets_[i]);
  }
  void check_id(TokenId id) const {
    KNPROBE_REQUIRE(id >= 0 && id < vocab_size(), TokenizerError, "token id ", id,
                    " is outside the vocabulary [0, ", vocab_size(), ")");
  }
  SpecialTokens special_;

 private:
  /// FNV-1a, 64-bit, finalised so that low (slot) and high (tag) bits both mix.
  static std::uint64_t hash(std::string_view s) {
    std::uint64_t h = 1469598103934665603ull;
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 33);
  }

  struct Slot {
    std::uint32_t tag = 0;  ///< high hash bits: most mismatches never touch the text
    TokenId id = -1;
  };
  std::string pool_;                       ///< every piece's text, concatenated
  std::vector<std::uint32_t> offsets_{0};  ///< piece i is pool_[offsets_[i], offsets_[i+1])
  std::vector<Slot> slots_;                ///< piece → id hash table (open addressing)
};

namespace detail {

/// Finds, left to right, the added / special token strings of a tokenizer in one text: at each
/// call the earliest occurrence at or after `start`, the longest one at that position. Each
/// string's next occurrence is found once and searched again only once passed, so a whole text
/// costs one pass per string (not one per match).
class TokenScanner {
 public:
  /// `patterns`: (text, id) pairs; empty texts are ignored. Views must outlive the scanner.
  TokenScanner(std::string_view text, std::vector<std::pair<std::string_view, TokenId>> patterns)
      : text_(text), patterns_(std::move(patterns)) {
    for (const auto& [p, id] : patterns_)
      next_.push_back(p.empty() ? std::string_view::npos : text_.find(p));
  }
  struct Match {
    std::size_t position;  ///< text.size() when there is none
    TokenId id;            ///< -1 when there is none
    std::size_t length;    ///< bytes of the matched string
  };
  /// The next token at or after `start`.
  Match next(std::size_t start) {
    std::size_t best = text_.size(), len = 0;
    TokenId id = -1;
    for (std::size_t k = 0; k < patterns_.size(); ++k) {
      const auto& p = patterns_[k].first;
      if (next_[k] != std::string_view::npos && next_[k] < start) next_[k] = text_.find(p, start);
      const std::size_t at = next_[k];
      if (at == std::string_view::npos || at > best) continue;
      if (at < best || p.size() > len) best = at, len = p.size(), id = patterns_[k].second;
    }
    return {best, id, len};
  }

 private:
  std::string_view text_;
  std::vector<std::pair<std::string_view, TokenId>> patterns_;
  std::vector<std::size_t> next_;
};

}  // namespace detail

}  // namespace knprobe
