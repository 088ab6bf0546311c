#pragma once
// The pre-tokenisation rules of byte-level BPE tokenizers: the text is cut into words, and BPE
// merges never cross a word boundary. Each rule is the leftmost-first match of one regular
// expression, written out here as a scanner (as llama.cpp does) so that no regex engine's
// backtracking limits decide the result. \p{L}, \p{N} and \s come from the ICU the library is
// built with (Debian 12: ICU 72, Unicode 15): code points assigned or re-categorised in later
// Unicode versions can be classified differently from Hugging Face tokenizers' tables. Case
// folding of the contractions is ASCII (as llama.cpp; Oniguruma also folds U+017F ſ to s). The
// names are those of the GGUF key tokenizer.ggml.pre; Hugging Face tokenizer.json files spell the
// same rules as pre_tokenizer objects (see byte_bpe.hpp).
//
//   gpt2    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//           (GGUF "gpt-2", also read as "gpt2"; HF ByteLevel with use_regex)
//   llama3  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
//           | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+          (GGUF "llama-bpe")
//   qwen2   as llama3 with \p{N} in place of \p{N}{1,3}                   (GGUF "qwen2")
//   smollm  every \p{N} alone, then gpt2 inside the rest (HF Sequence[Digits(individual),
//           ByteLevel])                                                   (GGUF "smollm")
//   llama_default  llama.cpp's chain for GGUF "default" (files converted with that name): each
//           expression cuts the pieces of the one before, matches and the text between them
//           becoming pieces: [\p{P}$+<=>^~|]+ , then gpt2, then \p{N}+ , then [0-9]{3}.
//           \p{P} is the Unicode punctuation categories (Pc Pd Ps Pe Pi Pf Po).

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "knprobe/core/error.hpp"
#include "knprobe/tokenize/unicode.hpp"

namespace knprobe {

enum class PreTokenizer { gpt2, llama3, qwen2, smollm, llama_default };

/// The rule a GGUF tokenizer.ggml.pre value names; TokenizerError naming the value when it is
/// not one of those implemented (a different rule would tokenize differently, silently).
/// llama.cpp's "default" is not GPT-2's rule but a chain of four expressions (llama_default).
inline PreTokenizer pre_tokenizer_from_gguf_name(std::string_view name) {
  if (name == "gpt2" || name == "gpt-2") return PreTokenizer::gpt2;  // llama.cpp writes "gpt-2"
  if (name == "default") return PreTokenizer::llama_default;
  if (name == "llama-bpe" || name == "llama3") return PreTokenizer::llama3;
  if (name == "qwen2") return PreTokenizer::qwen2;
  if (name == "smollm") return PreTokenizer::smollm;
  throw TokenizerError(
      detail::concat("pre-tokenizer '", std::string(name).substr(0, 64),
                     "' is not implemented (known: default, gpt2, llama-bpe, qwen2, smollm)"));
}

inline const char* to_string(PreTokenizer p) {
  switch (p) {
    case PreTokenizer::gpt2:
      return "gpt2";
    case PreTokenizer::llama3:
      return "llama-bpe";
    case PreTokenizer::qwen2:
      return "qwen2";
    case PreTokenizer::smollm:
      return "smollm";
    case PreTokenizer::llama_default:
      return "default";
  }
  return "?";
}

namespace detail {

/// Half-open ranges [begin, end) of the words of s[from, to) under `rule`, appended to `out`.
inline void pre_tokenize_ranges(const std::u32string& s, std::size_t from, std::size_t to,
                                PreTokenizer rule,
                                std::vector<std::pair<std::size_t, std::size_t>>& out) {
  using unicode::is_letter, unicode::is_number, unicode::is_space;
  const std::size_t n = to;
  auto run = [&](std::size_t j, auto pred) {
    while (j < n && pred(s[j])) ++j;
    return j;
  };
  auto other = [](char32_t c) { return !is_space(c) && !is_letter(c) && !is_number(c); };
  auto crlf = [](char32_t c) { return c == U'\r' || c == U'\n'; };
  auto lower = [](char32_t c) { return c >= U'A' && c <= U'Z' ? c + 32 : c; };
  // 's|'t|'re|'ve|'m|'ll|'d at i (case-insensitively when `fold`): its length, else 0.
  auto contraction = [&](std::size_t i, bool fold) -> std::size_t {
    if (s[i] != U'\'' || i + 1 >= n) return 0;
    auto at = [&](std::size_t k) { return k < n ? (fold ? lower(s[k]) : s[k]) : char32_t(0); };
    const char32_t a = at(i + 1), b = at(i + 2);
    if (a == U's' || a == U't' || a == U'm' || a == U'd') return 2;
    if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l')) return 3;
    return 0;
  };
  // \s+(?!\S)|\s+ at whitespace i: the end of the match.
  auto spaces = [&](std::size_t i) {
    const std::size_t k = run(i, is_space);
    return (k == n || k - i == 1) ? k : k - 1;
  };

  if (rule == PreTokenizer::llama_default) {
    // Maximal runs of `pred` and the text between them, each a piece (one regex split).
    auto split_runs = [&](const auto& pieces, auto pred) {
      std::vector<std::pair<std::size_t, std::size_t>> cut;
      for (const auto& [a, b] : pieces)
        for (std::size_t i = a; i < b;) {
          const bool in = pred(s[i]);
          std::size_t j = i + 1;
          while (j < b && pred(s[j]) == in) ++j;
          cut.emplace_back(i, j);
          i = j;
        }
      return cut;
    };
    auto punct = [](char32_t c) {
      return unicode::is_punctuation(c) || c == U'$' || c == U'+' || c == U'<' || c == U'=' ||
             c == U'>' || c == U'^' || c == U'~' || c == U'|';
    };
    std::vector<std::pair<std::size_t, std::size_t>> first = {{from, to}}, words;
    for (const auto& [a, b] : split_runs(first, punct))
      pre_tokenize_ranges(s, a, b, PreTokenizer::gpt2, words);
    auto ascii_digit = [](char32_t c) { return c >= U'0' && c <= U'9'; };
    for (const auto& [a, b] : split_runs(words, is_number)) {
      std::size_t rest = a;  // [0-9][0-9][0-9], leftmost first, non-overlapping
      for (std::size_t i = a; i + 3 <= b;) {
        if (ascii_digit(s[i]) && ascii_digit(s[i + 1]) && ascii_digit(s[i + 2])) {
          if (rest < i) out.emplace_back(rest, i);
          out.emplace_back(i, i + 3);
          rest = i += 3;
        } else {
          ++i;
        }
      }
      if (rest < b) out.emplace_back(rest, b);
    }
    return;
  }
  if (rule == PreTokenizer::smollm) {  // isolate every \p{N}, gpt2 inside the rest
    std::size_t a = from;
    for (std::size_t i = from; i < n; ++i)
      if (is_number(s[i])) {
        if (a < i) pre_tokenize_ranges(s, a, i, PreTokenizer::gpt2, out);
        out.emplace_back(i, i + 1);
        a = i + 1;
      }
    if (a < n) pre_tokenize_ranges(s, a, n, PreTokenizer::gpt2, out);
    return;
  }
  std::size_t i = from;
  while (i < n) {
    std::size_t end = i;
    if (rule == PreTokenizer::gpt2) {
      if (const auto c = contraction(i, false)) {
        end = i + c;
      } else {
        const std::size_t j = (s[i] == U' ' && i + 1 < n) ? i + 1 : i;
        if (is_letter(s[j]))
          end = run(j, is_letter);
        else if (is_number(s[j]))
          end = run(j, is_number);
        else if (other(s[j]))
          end = run(j, other);
        else
          end = spaces(i);
      }
    } else {  // llama3 / qwen2
      const std::size_t max_digits = rule == PreTokenizer::llama3 ? 3 : 1;
      if (const auto c = contraction(i, true)) {
        end = i + c;
      } else if (is_letter(s[i])) {  // [^\r\n\p{L}\p{N}]?\p{L}+ without the optional char
        end = run(i, is_letter);
      } else if (!crlf(s[i]) && !is_number(s[i]) && i + 1 < n && is_letter(s[i + 1])) {
        end = run(i + 1, is_letter);
      } else if (is_number(s[i])) {  // \p{N}{1,max}
        end = i + 1;
        while (end < n && end - i < max_digits && is_number(s[end])) ++end;
      } else if (other(s[i]) || (s[i] == U' ' && i + 1 < n && other(s[i + 1]))) {
        end = run(s[i] == U' ' ? i + 1 : i, other);  //  ?[^\s\p{L}\p{N}]+[\r\n]*
        end = run(end, crlf);
      } else {  // whitespace
        const std::size_t k = run(i, is_space);
        std::size_t last = 0;  // \s*[\r\n]+: up to the last CR / LF of the run
        for (std::size_t q = k; q > i && last == 0; --q)
          if (crlf(s[q - 1])) last = q;
        end = last != 0 ? last : spaces(i);
      }
    }
    out.emplace_back(i, end);
    i = end;
  }
}

}  // namespace detail

/// The words of UTF-8 `text` under `rule` (TokenizerError on invalid UTF-8). Concatenated, they
/// give `text` back.
inline std::vector<std::string> pre_tokenize(std::string_view text, PreTokenizer rule) {
  const std::u32string s = unicode::decode_utf8(text);
  std::vector<std::pair<std::size_t, std::size_t>> r;
  detail::pre_tokenize_ranges(s, 0, s.size(), rule, r);
  std::vector<std::string> out;
  out.reserve(r.size());
  for (const auto& [a, b] : r) out.push_back(unicode::encode_utf8(s.substr(a, b - a)));
  return out;
}

}  // namespace knprobe
