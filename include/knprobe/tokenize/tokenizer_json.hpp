#pragma once
// Pieces of a Hugging Face tokenizer.json shared by the BPE readers (byte-level BPE in
// byte_bpe.hpp, SentencePiece-style BPE in sentencepiece_bpe.hpp): the vocabulary, the merges,
// the added tokens, the BPE model's options and the post-processor. Each refuses, naming the file
// and the field, what would change the ids and is not implemented.

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "knprobe/core/error.hpp"
#include "knprobe/io/json_get.hpp"
#include "knprobe/tokenize/tokenizer.hpp"

namespace knprobe::detail::hf {

inline constexpr TokenId k_max_id = (1 << 24) - 1;

/// The "type" string of a JSON object, else "".
inline std::string type_of(const nlohmann::json& x) {
  return x.is_object() && x.contains("type") && x["type"].is_string() ? x["type"].get<std::string>()
                                                                      : std::string();
}

/// Ids may leave holes (a few unused ids), but the largest must stay below 2 · count + 1024: a
/// single huge id would otherwise size every by-id table (TokenizerError naming `where`).
inline void check_id_range(TokenId max_id, std::size_t count, const std::string& where) {
  KNPROBE_REQUIRE(static_cast<double>(max_id) < 2.0 * static_cast<double>(count) + 1024.0,
                  TokenizerError, where, ": largest id ", max_id, " for only ", count,
                  " pieces (ids must be nearly contiguous)");
}

/// piece → id from a JSON object; ids must be integers in [0, 2^24) and distinct.
inline std::unordered_map<std::string, TokenId> read_vocab(const nlohmann::json& j,
                                                           const std::string& where) {
  KNPROBE_REQUIRE(j.is_object(), TokenizerError, where, ": not a JSON object");
  std::unordered_map<std::string, TokenId> vocab;
  std::unordered_map<TokenId, std::string> by_id;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const auto id = io::json_int<TokenId>(it.value(), 0, k_max_id,
                                          where + " id of '" + it.key().substr(0, 40) + "'");
    const auto [prev, fresh] = by_id.emplace(id, it.key());
    KNPROBE_REQUIRE(fresh, TokenizerError, where, ": id ", id, " is given to both '",
                    prev->second.substr(0, 40), "' and '", it.key().substr(0, 40), "'");
    vocab[it.key()] = id;
  }
  return vocab;
}

/// model.merges: ["left", "right"] pairs or "left right" strings, in rank order.
inline std::vector<std::pair<std::string, std::string>> read_merges(const nlohmann::json& a,
                                                                    const std::string& name) {
  std::vector<std::pair<std::string, std::string>> merges;
  for (const auto& m : a) {
    if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      const auto& s = io::json_string(m, name + ": model.merges entry");
      const auto sp = s.find(' ');
      KNPROBE_REQUIRE(sp != std::string::npos, TokenizerError, name, ": malformed merge '",
                      s.substr(0, 80), "'");
      merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    }
  }
  return merges;
}

/// Every merge must join two pieces of the vocabulary and make a third (Hugging Face refuses
/// the rest at load too); `has(piece)` says whether a piece is in the vocabulary.
template <class Has>
void check_merges(const std::vector<std::pair<std::string, std::string>>& merges,
                  const std::string& where, Has&& has) {
  for (std::size_t r = 0; r < merges.size(); ++r) {
    const auto& [left, right] = merges[r];
    for (const auto* side : {&left, &right})
      KNPROBE_REQUIRE(has(*side), TokenizerError, where, ": merge ", r, " ('", left.substr(0, 40),
                      "' '", right.substr(0, 40), "') names '", side->substr(0, 40),
                      "', which is not in the vocabulary");
  }
  for (std::size_t r = 0; r < merges.size(); ++r)
    KNPROBE_REQUIRE(has(merges[r].first + merges[r].second), TokenizerError, where, ": merge ", r,
                    " ('", merges[r].first.substr(0, 40), "' '", merges[r].second.substr(0, 40),
                    "') makes a piece not in the vocabulary");
}

/// The BPE model options that change the ids and are not implemented: dropout, a
/// continuing-subword prefix, an end-of-word suffix. Returns model.ignore_merges.
inline bool read_bpe_options(const nlohmann::json& model, const std::string& name) {
  auto unset = [&](const char* key) {
    return !model.contains(key) || model[key].is_null() ||
           (model[key].is_string() && model[key].get<std::string>().empty());
  };
  KNPROBE_REQUIRE(unset("dropout") || model["dropout"] == 0, TokenizerError, name,
                  ": model.dropout ", model.value("dropout", nlohmann::json()).dump(),
                  " is not implemented (BPE dropout samples merges at random)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    KNPROBE_REQUIRE(unset(key), TokenizerError, name, ": model.", key, " ",
                    model[key].dump().substr(0, 40), " is not implemented");
  if (model.contains("ignore_merges") && !model["ignore_merges"].is_null())
    return io::json_bool(model["ignore_merges"], name + ": model.ignore_merges");
  return false;
}

struct AddedToken {
  std::string content;
  TokenId id = 0;
  bool special = false;
  /// lstrip, rstrip or single_word: the match would absorb or depend on the whitespace around it
  /// (not implemented: encoding a text that contains it is refused).
  bool strips = false;
  /// Matched in the normalized text, its own content normalized too (Hugging Face's second pass).
  bool normalized = false;
};

/// added_tokens, each added to `vocab` (an id that disagrees with the vocabulary is refused);
/// empty contents are skipped.
inline std::vector<AddedToken> read_added_tokens(const nlohmann::json& j, const std::string& name,
                                                 std::unordered_map<std::string, TokenId>& vocab) {
  std::vector<AddedToken> out;
  if (!j.contains("added_tokens")) return out;
  KNPROBE_REQUIRE(j["added_tokens"].is_array(), TokenizerError, name,
                  ": added_tokens must be an array");
  std::unordered_map<TokenId, const std::string*> by_id;
  for (const auto& [piece, id] : vocab) by_id.emplace(id, &piece);
  for (const auto& a : j["added_tokens"]) {
    const std::string where = name + ": added_tokens entry";
    AddedToken t;
    t.content = io::json_string(io::json_at(a, "content", where), where + " content");
    t.id = io::json_int<TokenId>(io::json_at(a, "id", where), 0, k_max_id, where + " id");
    auto flag = [&](const char* key) {
      return a.contains(key) && io::json_bool(a[key], where + " " + key);
    };
    t.special = flag("special");
    t.strips = flag("lstrip") || flag("rstrip") || flag("single_word");
    if (t.content.empty()) continue;
    t.normalized =
        a.contains("normalized") && io::json_bool(a["normalized"], where + " normalized");
    const auto [it, fresh] = vocab.emplace(t.content, t.id);
    KNPROBE_REQUIRE(fresh || it->second == t.id, TokenizerError, name, ": added token '", t.content,
                    "' has id ", t.id, " but the vocabulary gives it ", it->second);
    if (fresh) {  // its id must not belong to another piece
      const auto [other, free] = by_id.emplace(t.id, &it->first);
      KNPROBE_REQUIRE(free, TokenizerError, name, ": added token '", t.content, "' has id ", t.id,
                      ", which is the id of '", other->second->substr(0, 40), "'");
    }
    out.push_back(std::move(t));
  }
  return out;
}

/// A post_processor: ByteLevel (offsets only), TemplateProcessing whose single template is the
/// sequence alone or one special token and the sequence (a BOS: Llama 2 / 3, Gemma), or a
/// Sequence of these. Returns the BOS id the template puts first, if any; anything else (an
/// appended EOS, RoBERTa's processor) is refused.
inline std::optional<TokenId> read_post_processor(const nlohmann::json& p, const std::string& name,
                                                  int vocab_size) {
  if (p.is_null()) return std::nullopt;
  const std::string type = type_of(p);
  auto refuse = [&](const std::string& why) {
    return TokenizerError(detail::concat(name, ": post_processor ", p.dump().substr(0, 160),
                                         " is not implemented (", why, ")"));
  };
  if (type == "ByteLevel") return std::nullopt;
  if (type == "Sequence") {
    KNPROBE_REQUIRE(p.contains("processors") && p["processors"].is_array(), TokenizerError, name,
                    ": post_processor Sequence without a processors array");
    std::optional<TokenId> bos;
    for (const auto& q : p["processors"])
      if (auto b = read_post_processor(q, name, vocab_size)) {
        KNPROBE_REQUIRE(!bos, TokenizerError, name, ": post_processor adds two leading tokens");
        bos = b;
      }
    return bos;
  }
  if (type != "TemplateProcessing") throw refuse("unknown type");
  const auto single = p.value("single", nlohmann::json());
  auto is_a = [](const nlohmann::json& x) {
    return x.is_object() && x.contains("Sequence") && x["Sequence"].is_object() &&
           x["Sequence"].value("id", nlohmann::json()) == "A";
  };
  if (single.is_array() && single.size() == 1 && is_a(single[0])) return std::nullopt;
  if (!(single.is_array() && single.size() == 2 && is_a(single[1]) && single[0].is_object() &&
        single[0].contains("SpecialToken") && single[0]["SpecialToken"].is_object()))
    throw refuse("only [A] or [special token, A] templates are implemented");
  const auto tok = single[0]["SpecialToken"].value("id", nlohmann::json());
  const auto specials = p.value("special_tokens", nlohmann::json());
  KNPROBE_REQUIRE(tok.is_string() && specials.is_object() &&
                      specials.contains(tok.get<std::string>()) &&
                      specials[tok.get<std::string>()].is_object() &&
                      specials[tok.get<std::string>()].contains("ids") &&
                      specials[tok.get<std::string>()]["ids"].is_array() &&
                      specials[tok.get<std::string>()]["ids"].size() == 1,
                  TokenizerError, name, ": post_processor's first template token has no single id");
  return io::json_int<TokenId>(specials[tok.get<std::string>()]["ids"][0], 0, vocab_size - 1,
                               name + ": post_processor special token id");
}

/// Whether a tokenizer.json is byte-level BPE (a ByteLevel pre-tokenizer anywhere, or none of
/// SentencePiece's "▁" rules); else it is SentencePiece-style BPE (a Metaspace pre-tokenizer or a
/// normalizer that writes "▁" for spaces: Llama 2, Mistral, Gemma).
inline bool is_byte_level(const nlohmann::json& j) {
  if (!j.is_object()) return true;
  const std::string text = j.value("pre_tokenizer", nlohmann::json()).dump() +
                           j.value("normalizer", nlohmann::json()).dump();
  if (text.find("\"ByteLevel\"") != std::string::npos) return true;
  return text.find("\"Metaspace\"") == std::string::npos &&
         text.find("\xE2\x96\x81") == std::string::npos &&
         text.find("\\u2581") == std::string::npos;
}

}  // namespace knprobe::detail::hf
