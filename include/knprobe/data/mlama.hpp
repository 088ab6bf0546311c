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
#include <limits>
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
#include "knprobe/io/files.hpp"
#include "knprobe/io/json_get.hpp"
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

/// A JSON object of a .jsonl file with where it came from ("<file>:<line>").
struct JsonlRow {
  nlohmann::json value;
  std::string where;
};

/// Appends the JSON objects of a .jsonl file to `out` (missing file: nothing; a path that is not
/// a regular file, or one over 256 MiB: IoError / FormatError naming it).
inline void read_jsonl(const std::filesystem::path& p, std::vector<JsonlRow>& out,
                       std::vector<DataProblem>& problems) {
  std::error_code ec;
  if (!std::filesystem::exists(p, ec)) return;
  const std::string text = io::read_file(p, "mLAMA file", std::uintmax_t(256) << 20);
  std::size_t n = 0, begin = 0;
  while (begin < text.size()) {
    std::size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    const std::string_view line(text.data() + begin, end - begin);
    begin = end + 1;
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    if (!io::json_depth_ok(line)) {
      problems.push_back({p.string() + ":" + std::to_string(n), "JSON nested too deeply"});
      continue;
    }
    auto j = nlohmann::json::parse(line, nullptr, false);
    const std::string where = p.string() + ":" + std::to_string(n);
    if (!j.is_object())
      problems.push_back({where, j.is_discarded() ? "not valid JSON" : "not a JSON object"});
    else
      out.push_back({std::move(j), where});
  }
}

/// Occurrences of `needle` in `s`.
inline std::size_t count_of(const std::string& s, std::string_view needle) {
  std::size_t n = 0;
  for (auto at = s.find(needle); at != std::string::npos; at = s.find(needle, at + needle.size()))
    ++n;
  return n;
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
  for (const auto& lang : o.languages)
    KNPROBE_REQUIRE(valid_language_code(lang), ArgumentError, "mLAMA: language code '", lang,
                    "' (expected 1-16 of A-Z a-z 0-9 _ -)");
  for (const auto& lang : o.languages) {
    const fs::path dir = root / lang;
    KNPROBE_REQUIRE(fs::is_directory(dir), FormatError, root.string(), ": no folder for language '",
                    lang, "'");
    const bool zh = o.simplify_chinese && detail::is_chinese(lang);
    if (zh && !t2s) t2s.emplace("t2s.json");
    auto norm = [&](const nlohmann::json& v) {
      const auto& s = v.get_ref<const std::string&>();
      return zh ? t2s->convert(s) : s;
    };
    std::vector<detail::JsonlRow> rows;
    for (const char* split : {"train.jsonl", "dev.jsonl"})
      detail::read_jsonl(dir / "templates" / split, rows, out.problems);
    for (const auto& [r, where] : rows) {
      if (!(r.contains("relation") && r["relation"].is_string() && r.contains("template") &&
            r["template"].is_string())) {
        out.problems.push_back({where, "a template line needs string 'relation' and 'template'"});
        continue;
      }
      const std::string rel = r["relation"].get<std::string>(), tpl = norm(r["template"]);
      const auto [it, fresh] = templates[lang].emplace(rel, tpl);
      if (!fresh && it->second != tpl)
        out.problems.push_back({where, "second, different template of " + rel + " ignored"});
    }
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (name == "templates") continue;
      std::vector<detail::JsonlRow> facts;
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
      for (const auto& [f, where] : facts) {
        if (!f.contains("lineid") || !f.contains("sub_label") || !f["sub_label"].is_string() ||
            !f.contains("obj_label") || !f["obj_label"].is_string()) {
          out.problems.push_back({where, "a line lacks lineid, sub_label or obj_label"});
          continue;
        }
        int lineid = 0;
        try {
          lineid = io::json_int<int>(f["lineid"], 0, std::numeric_limits<int>::max(), "lineid");
        } catch (const FormatError& e) {
          out.problems.push_back({where, e.what()});
          continue;
        }
        const auto [it, fresh] =
            m.emplace(lineid, detail::MlamaTriple{norm(f["sub_label"]), norm(f["obj_label"])});
        if (!fresh)
          out.problems.push_back(
              {where, "lineid " + std::to_string(lineid) + " appears twice; the first is kept"});
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
      else if (detail::count_of(t->second, "[Y]") != 1)
        why = "template '" + t->second + "' must hold [Y] exactly once";
      else if (detail::count_of(t->second, "[X]") != 1)
        why = "template '" + t->second + "' must hold [X] exactly once";
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
          // Replace the later slot first, so that a subject holding "[Y]" is never taken for it.
          std::string p = tpl;
          const auto px = p.find("[X]"), py = p.find("[Y]");
          if (px > py)
            p.replace(px, 3, it->second.subject), p.replace(py, 3, o.mask_token);
          else
            p.replace(py, 3, o.mask_token), p.replace(px, 3, it->second.subject);
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
