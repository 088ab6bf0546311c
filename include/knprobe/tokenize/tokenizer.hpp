#pragma once
// One interface for every tokenizer family: encode(text) → ids, decode(ids) → text, special ids.

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
  virtual int vocab_size() const = 0;
  virtual std::optional<TokenId> piece_to_id(std::string_view piece) const = 0;
  virtual std::string id_to_piece(TokenId id) const = 0;
  const SpecialTokens& special() const { return special_; }

 protected:
  void check_id(TokenId id) const {
    KNPROBE_REQUIRE(id >= 0 && id < vocab_size(), TokenizerError, "token id ", id,
                    " is outside the vocabulary [0, ", vocab_size(), ")");
  }
  SpecialTokens special_;
};

}  // namespace knprobe
