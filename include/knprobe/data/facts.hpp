#pragma once
// Facts in several languages from JSON Lines, one fact per line:
//   {"id": "capital_france", "relation": "capital",
//    "prompts": {"en": "The capital of France is the city of", "zh": "法国的首都是"},
//    "answers": {"en": " Paris", "zh": "巴黎"}}
// Decoder prompts end where the answer begins; encoder prompts hold one [MASK]. Answers are
// tokenised as written (keep the leading space where the language puts one).
//
// What a line must satisfy (otherwise it is reported in `problems` with the reason and skipped):
// a JSON object; "id" a string of 1..256 bytes without control characters, unique in the file;
// "relation" (optional) a string of at most 256 bytes; "prompts" and "answers" objects whose keys
// are language codes ([A-Za-z0-9_-], 1..16 bytes) and whose values are non-empty strings of at
// most 64 KiB (k_max_fact_text).

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "knprobe/core/error.hpp"
#include "knprobe/io/files.hpp"
#include "knprobe/io/json_get.hpp"

namespace knprobe {

struct Fact {
  std::string id, relation;
  std::map<std::string, std::string> prompts, answers;  ///< by language code
};

/// A line that could not be read, with the reason (the rest of the file is still loaded).
struct FactProblem {
  std::size_t line = 0;
  std::string reason;
};

struct FactFile {
  std::vector<Fact> facts;
  std::vector<FactProblem> problems;
};

/// Longest prompt or answer accepted, in bytes.
inline constexpr std::size_t k_max_fact_text = 64 * 1024;
/// Largest fact file read, in bytes.
inline constexpr std::uintmax_t k_max_fact_file = std::uintmax_t(256) << 20;

/// True when `lang` is a usable language code: 1..16 bytes of [A-Za-z0-9_-] (it becomes part of
/// output file names and of mLAMA folder paths).
inline bool valid_language_code(std::string_view lang) {
  if (lang.empty() || lang.size() > 16) return false;
  for (unsigned char c : lang)
    if (!(std::isalnum(c) || c == '_' || c == '-') || c >= 128) return false;
  return true;
}

namespace detail {

/// Why `id` cannot be a fact id, or "" when it can.
inline std::string fact_id_problem(std::string_view id) {
  if (id.empty()) return "'id' is empty";
  if (id.size() > 256) return "'id' is longer than 256 bytes";
  for (unsigned char c : id)
    if (c < 0x20 || c == 0x7f) return "'id' contains a control character";
  return {};
}

}  // namespace detail

/// Parses JSON Lines fact text (`name` is used in messages). A malformed line is recorded in
/// `problems` and skipped; FormatError when nothing at all could be read.
inline FactFile parse_facts(std::string_view text, const std::string& name) {
  FactFile out;
  std::map<std::string, std::size_t> first_line;  // id → line, for duplicates
  std::size_t n = 0, begin = 0;
  while (begin < text.size()) {
    std::size_t end = text.find('\n', begin);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(begin, end - begin);
    begin = end + 1;
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    auto bad = [&](const std::string& why) { out.problems.push_back({n, why}); };
    if (!io::json_depth_ok(line)) {
      bad("JSON nested too deeply");
      continue;
    }
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object()) {
      bad(j.is_discarded() ? "not valid JSON" : "not a JSON object");
      continue;
    }
    if (!j.contains("id") || !j["id"].is_string() || !j.contains("prompts") ||
        !j["prompts"].is_object() || !j.contains("answers") || !j["answers"].is_object()) {
      bad("needs string 'id' and objects 'prompts' and 'answers'");
      continue;
    }
    Fact f;
    f.id = j["id"].get<std::string>();
    if (auto why = detail::fact_id_problem(f.id); !why.empty()) {
      bad(why);
      continue;
    }
    if (j.contains("relation")) {
      if (!j["relation"].is_string() || j["relation"].get_ref<const std::string&>().size() > 256) {
        bad("'relation' must be a string of at most 256 bytes");
        continue;
      }
      f.relation = j["relation"].get<std::string>();
    }
    std::string why;
    for (const char* key : {"prompts", "answers"})
      for (auto it = j[key].begin(); it != j[key].end() && why.empty(); ++it) {
        if (!valid_language_code(it.key()))
          why = std::string("'") + key + "' has the language code '" + it.key().substr(0, 40) +
                "' (expected 1-16 of A-Z a-z 0-9 _ -)";
        else if (!it.value().is_string() || it.value().get_ref<const std::string&>().empty())
          why = std::string(key) + "." + it.key() + " must be a non-empty string";
        else if (it.value().get_ref<const std::string&>().size() > k_max_fact_text)
          why = std::string(key) + "." + it.key() + " is longer than " +
                std::to_string(k_max_fact_text) + " bytes";
        else
          (std::string(key) == "prompts" ? f.prompts : f.answers)[it.key()] =
              it.value().get<std::string>();
      }
    if (!why.empty()) {
      bad(why);
      continue;
    }
    const auto [it, fresh] = first_line.emplace(f.id, n);
    if (!fresh) {
      bad("duplicate id '" + f.id + "' (first on line " + std::to_string(it->second) + ")");
      continue;
    }
    out.facts.push_back(std::move(f));
  }
  KNPROBE_REQUIRE(!out.facts.empty() || !out.problems.empty(), FormatError, name, ": no facts");
  return out;
}

/// Reads a JSONL fact file (a regular file of at most 256 MiB; IoError / FormatError naming it
/// otherwise). A malformed line is recorded in `problems` and skipped.
inline FactFile read_facts(const std::filesystem::path& path) {
  return parse_facts(io::read_file(path, "fact file", k_max_fact_file), path.string());
}

}  // namespace knprobe
