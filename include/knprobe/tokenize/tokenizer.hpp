#pragma once
// One interface for every tokenizer family: encode(text) → ids, decode(ids) → text, special ids.

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
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
  int vocab_size() const { return static_cast<int>(text_.size()); }
  /// The id of a vocabulary piece (in the family's own spelling, e.g. "▁Paris", "##ing", "ĠParis").
  std::optional<TokenId> piece_to_id(std::string_view piece) const {
    auto it = index_.find(std::string(piece));
    if (it == index_.end()) return std::nullopt;
    return it->second;
  }
  const std::string& id_to_piece(TokenId id) const {
    check_id(id);
    return text_[static_cast<std::size_t>(id)];
  }
  const SpecialTokens& special() const { return special_; }

 protected:
  /// Sets the vocabulary: piece text by id. A repeated text keeps its first id; "" is not indexed.
  void set_vocabulary(std::vector<std::string> text) {
    KNPROBE_REQUIRE(!text.empty(), TokenizerError, "the vocabulary is empty");
    text_ = std::move(text);
    index_.clear();
    index_.reserve(text_.size());
    for (std::size_t i = 0; i < text_.size(); ++i)
      if (!text_[i].empty()) index_.emplace(text_[i], static_cast<TokenId>(i));
  }
  /// Unchecked piece text (ids already validated).
  const std::string& piece_text(TokenId id) const { return text_[static_cast<std::size_t>(id)]; }
  void check_id(TokenId id) const {
    KNPROBE_REQUIRE(id >= 0 && id < vocab_size(), TokenizerError, "token id ", id,
                    " is outside the vocabulary [0, ", vocab_size(), ")");
  }
  SpecialTokens special_;

 private:
  std::vector<std::string> text_;
  std::unordered_map<std::string, TokenId> index_;
};

}  // namespace knprobe
