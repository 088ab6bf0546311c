#pragma once
// mLAMA (Kassner et al. 2021) facts across languages, from its directory layout:
//   <root>/<lang>/templates/{train,dev}.jsonl       {"relation": "P36", "template": "The capital of
//   [X] is [Y] ."} <root>/<lang>/<relation>/{train,dev}.jsonl      {"lineid": 7, "sub_label": …,
//   "obj_label": …} <root>/<lang>/<relation>.jsonl                  (some relations / languages are
//   single files)
// train and dev are concatenated; facts are joined across languages by (relation, lineid) and kept
// when present in every requested language. Prompts come from the templates: for decoders the
// template is cut before [Y] (the answer continues the prompt; a space before [Y] moves into the
// answer, " Paris"), for encoders [Y] becomes the mask token. Chinese ("zh…") text is normalised
// from traditional to simplified characters with OpenCC. Anything that cannot become a fact is
// reported in `problems` with the reason; the rest is loaded.

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "knprobe/core/error.hpp"
#include "knprobe/core/rng.hpp"
#include "knprobe/data/chinese.hpp"
#include "knprobe/data/facts.hpp"
#include "knprobe/model/concept.hpp"

namespace knprobe {

struct MlamaOptions {
  std::vector<std::string> languages{"en", "zh"};
  std::vector<std::string> relations;  ///< empty = every relation with data in all languages
  Objective objective = Objective::causal_lm;
  std::string mask_token = "[MASK]";  ///< encoders: what [Y] becomes
  bool simplify_chinese = true;       ///< OpenCC t2s on "zh…" languages
  std::size_t sample = 0;             ///< 0 = all facts, else a seeded sample of this many
  std::uint64_t seed = 42;
};

/// Something that did not become a fact: where (language / relation / line) and why.
struct DataProblem {
  std::string where, reason;
};

struct MlamaData {
  std::vector<Fact> facts;  ///< sorted by (relation, lineid); id = "<relation>:<lineid>"
  std::vector<DataProblem> problems;
};

namespace detail {

struct MlamaTriple {
  std::string subject, object;
};

/// Appends the JSON objects of a .jsonl file to `out` (missing file: nothing).
inline void read_jsonl(const std::filesystem::path& p, std::vector<nlohmann::json>& out,
                       std::vector<DataProblem>& problems) {
  std::ifstream in(p);
  if (!in.good()) return;
  std::string line;
  for (std::size_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object())
      problems.push_back({p.string() + ":" + std::to_string(n), "not a JSON object"});
    else
      out.push_back(std::move(j));
  }
}

inline bool is_chinese(const std::string& lang) {
  return lang.rfind("zh", 0) == 0;
}

/// Decoder prompt / answer from a template: cut before [Y]; a space before [Y] goes to the answer.
inline std::optional<std::pair<std::string, std::string>> decoder_prompt(std::string tpl,
                                                                         const std::string& x,
                                                                         const std::string& y) {
  const auto py = tpl.find("[Y]");
  std::string prompt = tpl.substr(0, py), answer = y;
  if (const auto px = prompt.find("[X]"); px != std::string::npos) prompt.replace(px, 3, x);
  if (!prompt.empty() && prompt.back() == ' ') {
    while (!prompt.empty() && prompt.back() == ' ') prompt.pop_back();
    answer = " " + y;
  }
  if (prompt.find_first_not_of(' ') == std::string::npos) return std::nullopt;
  return std::pair{prompt, answer};
}

}  // namespace detail

/// Keeps a seeded sample of `n` facts (Fisher–Yates, then the first n, back in their original
/// order); n = 0 or n ≥ size keeps all.
inline void sample_facts(std::vector<Fact>& facts, std::size_t n, std::uint64_t seed) {
  if (n == 0 || n >= facts.size()) return;
  Rng rng(seed);
  std::vector<std::size_t> idx(facts.size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  for (std::size_t i = idx.size() - 1; i > 0; --i)
    std::swap(idx[i], idx[static_cast<std::size_t>(rng.below(i + 1))]);
  idx.resize(n);
  std::sort(idx.begin(), idx.end());
  std::vector<Fact> kept;
  for (auto i : idx) kept.push_back(std::move(facts[i]));
  facts = std::move(kept);
}

/// Loads the facts of `o.languages` (and `o.relations`) from an mLAMA root directory.
inline MlamaData load_mlama(const std::filesystem::path& root, const MlamaOptions& o = {}) {
  namespace fs = std::filesystem;
  KNPROBE_REQUIRE(!o.languages.empty(), ArgumentError, "mLAMA: no languages requested");
  KNPROBE_REQUIRE(fs::is_directory(root), FormatError, root.string(),
                  ": not a directory (expected the mLAMA root with one folder per language)");
  MlamaData out;
  std::optional<ChineseConverter> t2s;
  std::map<std::string, std::map<std::string, std::string>> templates;  // lang → rel → template
  std::map<std::string, std::map<std::string, std::map<int, detail::MlamaTriple>>> triples;
  for (const auto& lang : o.languages) {
    const fs::path dir = root / lang;
    KNPROBE_REQUIRE(fs::is_directory(dir), FormatError, root.string(), ": no folder for language '",
                    lang, "'");
    const bool zh = o.simplify_chinese && detail::is_chinese(lang);
    if (zh && !t2s) t2s.emplace("t2s.json");
    auto norm = [&](const std::string& s) { return zh ? t2s->convert(s) : s; };
    std::vector<nlohmann::json> rows;
    for (const char* split : {"train.jsonl", "dev.jsonl"})
      detail::read_jsonl(dir / "templates" / split, rows, out.problems);
    for (const auto& r : rows)
      if (r.contains("relation") && r["relation"].is_string() && r.contains("template") &&
          r["template"].is_string())
        templates[lang][r["relation"].get<std::string>()] = norm(r["template"].get<std::string>());
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (name == "templates") continue;
      std::vector<nlohmann::json> facts;
      std::string rel;
      if (e.is_directory()) {
        rel = name;
        for (const char* split : {"train.jsonl", "dev.jsonl"})
          detail::read_jsonl(e.path() / split, facts, out.problems);
      } else if (e.path().extension() == ".jsonl") {
        rel = e.path().stem().string();
        detail::read_jsonl(e.path(), facts, out.problems);
      } else {
        continue;
      }
      if (!o.relations.empty() &&
          std::find(o.relations.begin(), o.relations.end(), rel) == o.relations.end())
        continue;
      auto& m = triples[lang][rel];
      for (const auto& f : facts) {
        if (!f.contains("lineid") || !f["lineid"].is_number_integer() || !f.contains("sub_label") ||
            !f["sub_label"].is_string() || !f.contains("obj_label") ||
            !f["obj_label"].is_string()) {
          out.problems.push_back({lang + "/" + rel, "a line lacks lineid, sub_label or obj_label"});
          continue;
        }
        m[f["lineid"].get<int>()] = {norm(f["sub_label"].get<std::string>()),
                                     norm(f["obj_label"].get<std::string>())};
      }
    }
  }
  // Relations with data in the first language; each must have data and a usable template in all.
  std::set<std::string> relations;
  for (const auto& [rel, _] : triples[o.languages[0]]) relations.insert(rel);
  for (const auto& r : o.relations)
    if (!relations.count(r))
      out.problems.push_back({o.languages[0] + "/" + r, "relation has no data"});
  for (const auto& rel : relations) {
    bool usable = true;
    for (const auto& lang : o.languages) {
      const auto t = templates[lang].find(rel);
      std::string why;
      if (!triples[lang].count(rel))
        why = "relation has no data in this language";
      else if (t == templates[lang].end())
        why = "relation has no template";
      else if (t->second.find("[Y]") == std::string::npos)
        why = "template '" + t->second + "' has no [Y]";
      else if (t->second.find("[X]") == std::string::npos)
        why = "template '" + t->second + "' has no [X]";
      else if (o.objective == Objective::causal_lm && t->second.find("[Y]") < t->second.find("[X]"))
        why = "template '" + t->second + "' puts [Y] before [X]: no decoder prompt";
      if (!why.empty()) {
        out.problems.push_back({lang + "/" + rel, why});
        usable = false;
      }
    }
    if (!usable) continue;
    std::size_t missing = 0;
    for (const auto& [lineid, first] : triples[o.languages[0]][rel]) {
      Fact f;
      f.id = rel + ":" + std::to_string(lineid);
      f.relation = rel;
      bool ok = true;
      for (const auto& lang : o.languages) {
        const auto& m = triples[lang][rel];
        const auto it = m.find(lineid);
        if (it == m.end() || it->second.subject.empty() || it->second.object.empty()) {
          ok = false;
          break;
        }
        const std::string& tpl = templates[lang][rel];
        if (o.objective == Objective::causal_lm) {
          const auto pa = detail::decoder_prompt(tpl, it->second.subject, it->second.object);
          if (!pa) {
            ok = false;
            break;
          }
          f.prompts[lang] = pa->first;
          f.answers[lang] = pa->second;
        } else {
          std::string p = tpl;
          p.replace(p.find("[X]"), 3, it->second.subject);
          p.replace(p.find("[Y]"), 3, o.mask_token);
          f.prompts[lang] = p;
          f.answers[lang] = it->second.object;
        }
      }
      if (ok)
        out.facts.push_back(std::move(f));
      else
        ++missing;
    }
    if (missing)
      out.problems.push_back({rel, std::to_string(missing) +
                                       " facts lack a subject or object in one of the languages"});
  }
  sample_facts(out.facts, o.sample, o.seed);
  return out;
}

}  // namespace knprobe
