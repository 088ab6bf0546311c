#pragma once
// UTF-8 decoding and the Unicode properties tokenizers need (general categories, NFD, case
// folding), backed by ICU (Debian libicu-dev). Invalid UTF-8 is an error, never silently dropped.

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <string>
#include <string_view>
#include <vector>

#include "knprobe/core/error.hpp"

namespace knprobe::unicode {

/// Decodes UTF-8 into code points. Throws TokenizerError at the first invalid byte.
inline std::u32string decode_utf8(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    KNPROBE_REQUIRE(len > 0 && i + len <= s.size(), TokenizerError, "invalid UTF-8 at byte ", i);
    char32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (int k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      KNPROBE_REQUIRE((cc & 0xC0) == 0x80, TokenizerError, "invalid UTF-8 at byte ", i + k);
      cp = (cp << 6) | (cc & 0x3F);
    }
    KNPROBE_REQUIRE(cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF), TokenizerError,
                    "invalid code point in UTF-8 at byte ", i);
    out.push_back(cp);
    i += static_cast<std::size_t>(len);
  }
  return out;
}

/// Appends the UTF-8 encoding of one code point.
inline void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

inline std::string encode_utf8(std::u32string_view s) {
  std::string out;
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

/// Splits UTF-8 text into its characters (each a UTF-8 string); invalid bytes throw.
inline std::vector<std::string> utf8_chars(std::string_view s) {
  std::vector<std::string> out;
  for (char32_t c : decode_utf8(s)) {
    out.emplace_back();
    append_utf8(out.back(), c);
  }
  return out;
}

/// General category L* (regex \p{L}).
inline bool is_letter(char32_t c) {
  return (U_GET_GC_MASK(c) & U_GC_L_MASK) != 0;
}
inline bool is_number(char32_t c) {
  return (U_GET_GC_MASK(c) & U_GC_N_MASK) != 0;
}
/// General category P* (regex \p{P}).
inline bool is_punctuation(char32_t c) {
  return (U_GET_GC_MASK(c) & U_GC_P_MASK) != 0;
}
inline bool is_mark_nonspacing(char32_t c) {
  return u_charType(c) == U_NON_SPACING_MARK;
}
/// Python's str.isspace / regex \s: White_Space property.
inline bool is_space(char32_t c) {
  return u_isUWhiteSpace(c) != 0;
}

/// Code points in the CJK blocks that BERT splits into single-character words.
inline bool is_cjk(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/// NFD decomposition of UTF-8 text.
inline std::u32string nfd(std::u32string_view s) {
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* n = icu::Normalizer2::getNFDInstance(err);
  KNPROBE_REQUIRE(U_SUCCESS(err), TokenizerError, "ICU NFD normalizer unavailable");
  const std::string u8 = encode_utf8(s);
  icu::UnicodeString in = icu::UnicodeString::fromUTF8(u8);
  icu::UnicodeString out = n->normalize(in, err);
  KNPROBE_REQUIRE(U_SUCCESS(err), TokenizerError, "ICU NFD normalization failed");
  std::string r;
  out.toUTF8String(r);
  return decode_utf8(r);
}

/// NFC composition of code points.
inline std::u32string nfc(std::u32string_view s) {
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* n = icu::Normalizer2::getNFCInstance(err);
  KNPROBE_REQUIRE(U_SUCCESS(err), TokenizerError, "ICU NFC normalizer unavailable");
  const std::string u8 = encode_utf8(s);
  icu::UnicodeString out = n->normalize(icu::UnicodeString::fromUTF8(u8), err);
  KNPROBE_REQUIRE(U_SUCCESS(err), TokenizerError, "ICU NFC normalization failed");
  std::string r;
  out.toUTF8String(r);
  return decode_utf8(r);
}

/// Full lower-casing (root locale), as Python's str.lower.
inline std::u32string to_lower(std::u32string_view s) {
  const std::string u8 = encode_utf8(s);
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(u8);
  u.toLower(icu::Locale::getRoot());
  std::string r;
  u.toUTF8String(r);
  return decode_utf8(r);
}

}  // namespace knprobe::unicode
