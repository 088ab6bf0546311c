#pragma once
// llama2.c `tokenizer.bin`: int32 max_token_length, then per token {f32 score, int32 len, bytes}.
// Encoding as run.c: BOS (1), a dummy-prefix " " when the text is non-empty, each UTF-8 code point
// as its piece or as byte tokens (byte + 3), then merges by highest score (ties → first).
// Decoding strips the space of the first piece after BOS and maps <0xXX> to bytes.

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <unordered_map>
#include <vector>

#include "knprobe/io/byte_reader.hpp"
#include "knprobe/io/mapped_file.hpp"
#include "knprobe/tokenize/score_bpe.hpp"
#include "knprobe/tokenize/tokenizer.hpp"
#include "knprobe/tokenize/unicode.hpp"

namespace knprobe {

class Llama2cTokenizer : public Tokenizer {
 public:
  /// Reads `tokenizer.bin` for a model with `vocab_size` tokens.
  Llama2cTokenizer(const std::filesystem::path& path, int vocab_size) {
    KNPROBE_REQUIRE(vocab_size > 3, TokenizerError, path.string(), ": vocab_size ", vocab_size,
                    " too small for llama2.c (needs <unk>, BOS, EOS)");
    io::MappedFile f(path);
    io::ByteReader r(f.bytes(), f.path());
    max_len_ = r.read<std::int32_t>("max_token_length");
    KNPROBE_REQUIRE(max_len_ > 0 && max_len_ < 1 << 16, FormatError, f.path(),
                    ": max_token_length ", max_len_, " is invalid");
    std::vector<std::string> pieces;
    for (int i = 0; i < vocab_size; ++i) {
      scores_.push_back(r.read<float>("token score"));
      KNPROBE_REQUIRE(std::isfinite(scores_.back()), FormatError, f.path(), ": token ", i,
                      " has a non-finite score");
      const auto len = r.read<std::int32_t>("token length");
      KNPROBE_REQUIRE(len >= 0 && len <= max_len_, FormatError, f.path(), ": token ", i,
                      " has length ", len, " (max ", max_len_, ")");
      pieces.push_back(r.read_bytes(static_cast<std::uint64_t>(len), "token bytes"));
    }
    set_vocabulary(std::move(pieces));
    special_.unk = 0;
    special_.bos = 1;
    special_.eos = 2;
  }

  using Tokenizer::encode;
  std::vector<TokenId> encode(std::string_view text, const EncodeOptions& opts) const override {
    std::vector<TokenId> out;
    if (opts.add_special) out.push_back(*special_.bos);
    if (text.empty()) return out;
    std::vector<std::string> symbols;
    if (opts.dummy_prefix) symbols.push_back(" ");
    for (auto& c : unicode::utf8_chars(text)) symbols.push_back(std::move(c));
    // Code points outside the vocabulary become byte symbols before merging, as run.c does.
    std::vector<std::string> start;
    for (auto& s : symbols) {
      if (piece_to_id(s)) {
        start.push_back(std::move(s));
      } else {
        for (char b : s) start.push_back(byte_symbol(static_cast<unsigned char>(b)));
      }
    }
    const auto merged =
        detail::merge_by_score(std::move(start), [&](const std::string& p) -> std::optional<float> {
          const auto id = piece_to_id(p);
          if (!id) return std::nullopt;
          return scores_[static_cast<std::size_t>(*id)];
        });
    for (const auto& s : merged) {
      if (s.size() > 2 && s[0] == '\x01') {  // internal byte marker
        out.push_back(static_cast<TokenId>(static_cast<unsigned char>(s[1])) + 3);
        continue;
      }
      const auto id = piece_to_id(s);
      KNPROBE_REQUIRE(id.has_value(), TokenizerError, "llama2.c: symbol '", s,
                      "' not in vocabulary");
      out.push_back(*id);
    }
    return out;
  }

  std::string decode(std::span<const TokenId> ids, bool skip_special = true) const override {
    std::string out;
    TokenId prev = -1;
    for (TokenId id : ids) {
      check_id(id);
      if (id == *special_.bos || id == *special_.eos) {
        if (!skip_special) out += piece_text(id);
        prev = id;
        continue;
      }
      std::string p(piece_text(id));
      if (prev == *special_.bos && !p.empty() && p[0] == ' ') p.erase(0, 1);
      unsigned byte = 0;
      if (p.size() == 6 && std::sscanf(p.c_str(), "<0x%02X>", &byte) == 1)
        out.push_back(static_cast<char>(byte));
      else
        out += p;
      prev = id;
    }
    return out;
  }

 private:
  // A byte symbol never merges (no piece starts with \x01) and maps to id byte + 3.
  static std::string byte_symbol(unsigned char b) {
    return std::string{'\x01', static_cast<char>(b), '\x01'};
  }

  int max_len_ = 0;
  std::vector<float> scores_;
};

}  // namespace knprobe
