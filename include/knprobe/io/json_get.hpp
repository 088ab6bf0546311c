#pragma once
// Checked reads of JSON values from user files (config.json, tokenizer.json, fact files, mLAMA,
// results files). nlohmann's get<int>() truncates 32.7 to 32 and wraps 4294967328 to 32; these
// accept an integer only when the JSON number is one and lies in the stated range, and every
// error names where the value came from (file, line, key) and what was expected.

#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <type_traits>

#include "knprobe/core/error.hpp"

namespace knprobe::io {

namespace detail {

/// The value as short text for an error message (long values are cut).
inline std::string json_brief(const nlohmann::json& v) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

/// nlohmann's message without its "[json.exception.type_error.302] " prefix.
inline std::string json_message(const nlohmann::json::exception& e) {
  std::string msg = e.what();
  const auto cut = msg.find("] ");
  return cut == std::string::npos ? msg : msg.substr(cut + 2);
}

}  // namespace detail

/// The integer `v` in [lo, hi]. FormatError "<where>: expected an integer in [lo, hi], got <v>"
/// when v is not a JSON integer (a float such as 32.7 or 1e3, a string, a bool) or is out of range.
template <class I>
I json_int(const nlohmann::json& v, I lo, I hi, std::string_view where) {
  static_assert(std::is_integral_v<I> && !std::is_same_v<I, bool>);
  bool ok = false;
  I out{};
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (lo <= 0 || u >= static_cast<std::uint64_t>(lo))
      if (hi >= 0 && u <= static_cast<std::uint64_t>(hi)) ok = true, out = static_cast<I>(u);
  } else if (v.is_number_integer()) {
    const auto i = v.get<std::int64_t>();
    if constexpr (std::is_signed_v<I>) {
      ok = i >= static_cast<std::int64_t>(lo) && i <= static_cast<std::int64_t>(hi);
    } else {
      ok = i >= 0 && static_cast<std::uint64_t>(i) >= lo && static_cast<std::uint64_t>(i) <= hi;
    }
    if (ok) out = static_cast<I>(i);
  }
  if (!ok)
    throw FormatError(std::string(where) + ": expected an integer in [" + std::to_string(lo) +
                      ", " + std::to_string(hi) + "], got " + detail::json_brief(v));
  return out;
}

/// The finite number `v` in [lo, hi] (integers accepted). FormatError naming `where` otherwise.
inline double json_number(const nlohmann::json& v, double lo, double hi, std::string_view where) {
  const bool num = v.is_number();
  const double x = num ? v.get<double>() : 0.0;
  if (!num || !std::isfinite(x) || x < lo || x > hi) {
    std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
    throw FormatError(std::string(where) + ": expected a finite number in " + range + ", got " +
                      detail::json_brief(v));
  }
  return x;
}

/// The string `v`. FormatError naming `where` when it is not a string.
inline const std::string& json_string(const nlohmann::json& v, std::string_view where) {
  if (!v.is_string())
    throw FormatError(std::string(where) + ": expected a string, got " + detail::json_brief(v));
  return v.get_ref<const std::string&>();
}

/// The boolean `v` (not 0 / 1). FormatError naming `where` otherwise.
inline bool json_bool(const nlohmann::json& v, std::string_view where) {
  if (!v.is_boolean())
    throw FormatError(std::string(where) + ": expected true or false, got " +
                      detail::json_brief(v));
  return v.get<bool>();
}

/// `obj[key]`, which must exist. FormatError "<where>: missing key '<key>'" otherwise.
inline const nlohmann::json& json_at(const nlohmann::json& obj, const char* key,
                                     std::string_view where) {
  if (!obj.is_object())
    throw FormatError(std::string(where) + ": expected a JSON object, got " +
                      detail::json_brief(obj));
  const auto it = obj.find(key);
  if (it == obj.end()) throw FormatError(std::string(where) + ": missing key '" + key + "'");
  return *it;
}

/// Deepest nesting of arrays and objects accepted in any JSON input. nlohmann parses without
/// recursion but copies and dumps recursively, so a 1,000,000-deep `[[[...` (2 MB) would overflow
/// the stack later; no file knprobe reads nests deeper than 10.
inline constexpr int k_max_json_depth = 128;

/// True when no array / object in `text` nests deeper than `max_depth` (brackets inside strings
/// are skipped; the text need not be valid JSON).
inline bool json_depth_ok(std::string_view text, int max_depth = k_max_json_depth) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

/// Parses `text`; FormatError "<where>: not valid JSON (<parser message>)" on failure, or when
/// it nests deeper than k_max_json_depth.
inline nlohmann::json parse_json(std::string_view text, std::string_view where) {
  if (!json_depth_ok(text))
    throw FormatError(std::string(where) + ": JSON nested deeper than " +
                      std::to_string(k_max_json_depth) + " levels");
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {  // parse errors, number overflow (1e400)
    throw FormatError(std::string(where) + ": not valid JSON (" + detail::json_message(e) + ")");
  }
}

/// Throws NumericError naming `where` and the key path when `j` holds a NaN or infinite number
/// anywhere (nlohmann would write it as null: a silently wrong number in a results file).
inline void require_finite_json(const nlohmann::json& j, const std::string& where) {
  if (j.is_number_float()) {
    if (!std::isfinite(j.get<double>()))
      throw NumericError(where + ": a NaN or infinite number would be written");
  } else if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it)
      require_finite_json(it.value(), where + "." + it.key());
  } else if (j.is_array()) {
    for (std::size_t i = 0; i < j.size(); ++i)
      require_finite_json(j[i], where + "[" + std::to_string(i) + "]");
  }
}

}  // namespace knprobe::io
