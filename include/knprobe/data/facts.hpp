#pragma once
// Facts in several languages from JSON Lines, one fact per line:
//   {"id": "capital_france", "relation": "capital",
//    "prompts": {"en": "The capital of France is the city of", "zh": "法国的首都是"},
//    "answers": {"en": " Paris", "zh": "巴黎"}}
// Decoder prompts end where the answer begins; encoder prompts hold one [MASK]. Answers are
// tokenised as written (keep the leading space where the language puts one).

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "knprobe/core/error.hpp"

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

/// Reads a JSONL fact file. An unreadable file throws FormatError; a malformed line is recorded
/// in `problems` and skipped.
inline FactFile read_facts(const std::filesystem::path& path) {
  std::ifstream in(path);
  KNPROBE_REQUIRE(in.good(), FormatError, path.string(), ": cannot open fact file");
  FactFile out;
  std::string line;
  for (std::size_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const auto j = nlohmann::json::parse(line, nullptr, false);
    auto bad = [&](const std::string& why) { out.problems.push_back({n, why}); };
    if (!j.is_object()) {
      bad("not a JSON object");
      continue;
    }
    if (!j.contains("id") || !j["id"].is_string() || !j.contains("prompts") ||
        !j["prompts"].is_object() || !j.contains("answers") || !j["answers"].is_object()) {
      bad("needs string 'id' and objects 'prompts' and 'answers'");
      continue;
    }
    Fact f;
    f.id = j["id"].get<std::string>();
    f.relation = j.value("relation", std::string());
    bool ok = true;
    for (const char* key : {"prompts", "answers"})
      for (auto it = j[key].begin(); it != j[key].end(); ++it) {
        if (!it.value().is_string()) {
          ok = false;
          continue;
        }
        (std::string(key) == "prompts" ? f.prompts : f.answers)[it.key()] =
            it.value().get<std::string>();
      }
    if (!ok) {
      bad("prompts and answers must be strings");
      continue;
    }
    out.facts.push_back(std::move(f));
  }
  KNPROBE_REQUIRE(!out.facts.empty() || !out.problems.empty(), FormatError, path.string(),
                  ": no facts");
  return out;
}

}  // namespace knprobe
