// knprobe — command-line front end (thin: parses, calls the library, prints).
//   knprobe localize --model M [--tokenizer T] --facts F.jsonl --langs en,zh --out DIR
//   knprobe dkn      --model M [--tokenizer T] --facts F.jsonl --langs en,zh --out DIR
//   knprobe edit     --model M [--tokenizer T] --facts F.jsonl --langs en,zh --out DIR
//   knprobe factcheck --model M [--tokenizer T] --mlama DIR --langs en,zh --out DIR
//   knprobe run      --model M [--tokenizer T] --mlama DIR --langs en,zh --out results.jsonl
//                    (resumable; under mpirun the facts are sharded over the ranks)
//   knprobe report   results.jsonl... [--factcheck factcheck.json] --out report.html
//   knprobe predict  --model M [--tokenizer T] --prompt "The capital of France is" [--top 5]
// M: a .gguf file (Llama / Gemma 3), a llama2.c .bin checkpoint, or a Hugging Face gpt2 / bert
// directory (config.json + safetensors + tokenizer files).
#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <xtensor/xnpy.hpp>

#include "xxhash.h"
#ifdef KNPROBE_HAS_MPI
#include <mpi.h>
#endif

#include "knprobe/data/mlama.hpp"
#include "knprobe/experiments/degenerate.hpp"
#include "knprobe/experiments/editing.hpp"
#include "knprobe/experiments/fact_check.hpp"
#include "knprobe/experiments/localize.hpp"
#include "knprobe/experiments/run.hpp"
#include "knprobe/model/bert.hpp"
#include "knprobe/model/gpt2.hpp"
#include "knprobe/model/llama.hpp"
#include "knprobe/report/report.hpp"
#include "knprobe/tokenize/byte_bpe.hpp"
#include "knprobe/tokenize/llama2c_tokenizer.hpp"
#include "knprobe/tokenize/sentencepiece_bpe.hpp"
#include "knprobe/tokenize/wordpiece.hpp"
#include "knprobe/version.hpp"

namespace fs = std::filesystem;
using namespace knprobe;

namespace {

struct Common {
  std::string model, tokenizer;
};

/// Loads the model named by `c` and calls fn(model, tokenizer); the model is a mutable lvalue
/// (weight edits change it in place and restore it).
template <class F>
int with_model(const Common& c, F&& fn) {
  const fs::path p(c.model);
  KNPROBE_REQUIRE(fs::exists(p), ArgumentError, "model path '", c.model, "' does not exist");
  const auto t0 = std::chrono::steady_clock::now();
  if (p.extension() == ".gguf") {
    // The weights stay in the file's quantized blocks (dequantized tile by tile in each
    // product): loading is a file mapping, and forward / gradient passes read 4-7x fewer bytes.
    const auto f = std::make_shared<const io::GgufFile>(p);
    QuantizedLlamaModel m(load_llama_gguf_quantized(f));
    const auto tok = SentencePieceBpe::from_gguf(*f);
    std::fprintf(stderr, "knprobe: loaded %s (%s, %d layers × %d neurons) in %.2f s\n",
                 p.filename().c_str(), m.spec().family.c_str(), m.num_layers(), m.ffn_width(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return fn(m, tok);
  }
  if (p.extension() == ".bin") {
    auto m = LlamaModel<float>::load(p);
    const fs::path tp =
        c.tokenizer.empty() ? p.parent_path() / "tok512.bin" : fs::path(c.tokenizer);
    const Llama2cTokenizer tok(tp, m.vocab_size());
    return fn(m, tok);
  }
  if (fs::is_directory(p)) {  // Hugging Face directory: config.json says which backend
    const auto cfg = io::detail::read_json(p / "config.json");
    const std::string type = cfg.value("model_type", "");
    const fs::path tp = c.tokenizer.empty() ? p : fs::path(c.tokenizer);
    if (type == "gpt2") {
      auto m = Gpt2Model<float>::load(p);
      return fn(m, ByteBpe::from_directory(tp));
    }
    if (type == "bert") {
      auto m = BertModel<float>::load(p);
      return fn(m, WordPiece::from_directory(tp));
    }
    throw ArgumentError("model directory '" + c.model + "': model_type '" + type +
                        "' has no tokenizer reader here (gpt2 and bert directories are supported; "
                        "use the GGUF file of Llama / Gemma models)");
  }
  throw ArgumentError("model '" + c.model +
                      "': expected a .gguf file, a llama2.c .bin checkpoint (with --tokenizer) "
                      "or a Hugging Face gpt2 / bert directory");
}

std::map<std::string, double> parse_thresholds(const std::vector<std::string>& specs) {
  std::map<std::string, double> t{{"en", 0.3}, {"zh", 0.2}};
  for (const auto& s : specs) {
    const auto eq = s.find('=');
    KNPROBE_REQUIRE(eq != std::string::npos, ArgumentError, "--threshold '", s,
                    "': expected LANG=T");
    double v = 0;
    try {
      v = std::stod(s.substr(eq + 1));
    } catch (...) {
      throw ArgumentError("--threshold '" + s + "': T is not a number");
    }
    KNPROBE_REQUIRE(v > 0 && v <= 1, ArgumentError, "--threshold '", s, "': T must be in (0, 1]");
    t[s.substr(0, eq)] = v;
  }
  return t;
}

std::string pct(const std::optional<double>& x) {
  if (!x) return "   n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%+5.0f%%", 100.0 * *x);
  return buf;
}

void print_fact(const FactResult& f) {
  std::printf("%s (%s)\n", f.id.c_str(), f.relation.c_str());
  for (const auto& [lang, r] : f.languages) {
    std::printf("  %-3s P(answer)=%.3f%s  %zu neurons:", lang.c_str(), r.p_answer,
                r.top1 ? (*r.top1 ? " top-1" : " not top-1") : "", r.selection.neurons.size());
    int shown = 0;
    for (const auto& [n, s] : r.selection.ranked) {
      if (shown++ == 6) {
        std::printf(" …");
        break;
      }
      std::printf(" L%d.%d", n.layer, n.unit);
    }
    std::printf(
        "\n      suppress %s (unrelated %s, random control %s)   enhance %s (unrelated %s, control "
        "%s)\n",
        pct(r.suppress.related).c_str(), pct(r.suppress.unrelated).c_str(),
        pct(r.suppress.control).c_str(), pct(r.enhance.related).c_str(),
        pct(r.enhance.unrelated).c_str(), pct(r.enhance.control).c_str());
  }
  if (f.languages.size() > 1) {
    std::printf("  LIKN %zu:", f.likn.size());
    for (const auto& n : f.likn) std::printf(" L%d.%d", n.layer, n.unit);
    for (const auto& [lang, e] : f.likn_suppress)
      std::printf("   suppress in %s %s", lang.c_str(), pct(e.related).c_str());
    std::printf("\n");
  }
}

struct LocalizeArgs {
  Common common;
  std::string facts, mlama, prompt, answer, out = "knprobe-out", method = "amig",
                                            quadrature = "left", aggregate = "sum";
  std::vector<std::string> langs{"en", "zh"}, thresholds, relations;
  std::vector<int> layers;
  int steps = 20, max_answer_tokens = 0;
  std::size_t sample = 0, limit = 0;
  bool no_verify = false, paper_compat = false, require_correct = false, screen_only = false;
  std::uint64_t seed = 42;
  // edit
  double l1 = 1.0, l2 = 8.0;
  // dkn
  int top = 20, max_set_size = 2;
  double t_low = 0.2, t_high = 0.25;
  std::size_t max_passes = 100000;
  // factcheck
  int wrong = 5;
  double train_fraction = 0.8, relation_fraction = 0.7;
  std::optional<double> fixed_threshold;
  // run
  bool dkn = false;
  int top_per_layer = 8;
};

/// Facts from --facts or --prompt/--answer (mLAMA is read once the model is known).
std::vector<Fact> read_fact_args(const LocalizeArgs& a, std::vector<FactProblem>& problems) {
  std::vector<Fact> facts;
  KNPROBE_REQUIRE(a.facts.empty() || a.mlama.empty(), ArgumentError,
                  "give --facts or --mlama, not both");
  if (!a.mlama.empty()) return facts;
  if (!a.facts.empty()) {
    auto ff = read_facts(a.facts);
    facts = std::move(ff.facts);
    problems = std::move(ff.problems);
  } else {
    KNPROBE_REQUIRE(!a.prompt.empty() && !a.answer.empty(), ArgumentError,
                    "give --facts FILE, --mlama DIR, or both --prompt and --answer");
    KNPROBE_REQUIRE(a.langs.size() == 1, ArgumentError,
                    "--prompt/--answer take exactly one --langs");
    facts.push_back({"cli", "cli", {{a.langs[0], a.prompt}}, {{a.langs[0], a.answer}}});
  }
  for (const auto& p : problems)
    std::fprintf(stderr, "knprobe: %s line %zu skipped: %s\n", a.facts.c_str(), p.line,
                 p.reason.c_str());
  return facts;
}

AttributionOptions attribution_args(const LocalizeArgs& a) {
  AttributionOptions o;
  KNPROBE_REQUIRE(a.method == "amig" || a.method == "ig", ArgumentError,
                  "--method must be amig or ig");
  o.method = a.method == "ig" ? Method::ig : Method::amig;
  o.steps = a.steps;
  o.quadrature = a.quadrature == "gauss"       ? Quadrature::gauss_legendre
                 : a.quadrature == "trapezoid" ? Quadrature::trapezoid
                 : a.quadrature == "linspace"  ? Quadrature::linspace
                                               : Quadrature::left_riemann;
  KNPROBE_REQUIRE(a.quadrature == "gauss" || a.quadrature == "trapezoid" ||
                      a.quadrature == "left" || a.quadrature == "linspace",
                  ArgumentError, "--quadrature must be left, trapezoid, gauss or linspace");
  o.aggregation = a.aggregate == "mean" ? TokenAggregation::mean : TokenAggregation::sum;
  o.layers = a.layers;
  o.paper_compat = a.paper_compat;
  return o;
}

/// mLAMA facts (when --mlama) and screening (when --require-correct) for the loaded model; with
/// `pool`, also every fact before sampling and screening (fact-checking draws wrong objects there).
template <class M>
void prepare_facts(const LocalizeArgs& a, const KnowledgeProbe<M>& probe, const Tokenizer& tok,
                   std::vector<Fact>& facts, std::vector<SkippedFact>& filtered,
                   std::vector<Fact>* pool = nullptr) {
  if (pool) *pool = facts;  // --facts: every fact of the file
  if (!a.mlama.empty()) {
    MlamaOptions mo;
    mo.languages = a.langs;
    mo.relations = a.relations;
    mo.objective = ArchTraits<M>::objective;
    if (tok.special().mask) mo.mask_token = tok.id_to_piece(*tok.special().mask);
    mo.seed = a.seed;
    auto data = load_mlama(a.mlama, mo);
    for (const auto& p : data.problems)
      std::fprintf(stderr, "knprobe: mLAMA %s: %s\n", p.where.c_str(), p.reason.c_str());
    facts = std::move(data.facts);
    if (pool) *pool = facts;
    sample_facts(facts, a.sample, a.seed);
    std::fprintf(stderr, "knprobe: %zu mLAMA facts in %s\n", facts.size(), a.mlama.c_str());
  }
  if (a.require_correct) {
    AnswerableOptions ao;
    ao.languages = a.langs;
    ao.max_answer_tokens = a.max_answer_tokens;
    ao.limit = a.limit;
    ao.progress = [&](std::size_t scanned, std::size_t kept) {
      std::fprintf(stderr, "\rscreening: %zu scanned, %zu answered correctly   ", scanned, kept);
    };
    facts = answerable_facts(probe, facts, ao, filtered);
    std::fprintf(stderr, "\n");
  } else if (a.limit && facts.size() > a.limit) {
    facts.resize(a.limit);
  }
  KNPROBE_REQUIRE(!facts.empty(), ArgumentError, "no facts left to process");
}

/// Progress with rate and ETA on stderr, one call per (fact, language).
std::function<void(const std::string&)> progress_printer(std::size_t total) {
  auto done = std::make_shared<std::size_t>(0);
  const auto t0 = std::chrono::steady_clock::now();
  return [=](const std::string& what) {
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double left = *done < total ? static_cast<double>(total - *done) : 0.0;
    const double eta = *done ? el / static_cast<double>(*done) * left : 0.0;
    std::fprintf(stderr, "\r[%zu/%zu] %-40s %.0fs elapsed, ETA %.0fs   ", ++*done,
                 std::max(total, *done), what.c_str(), el, eta);
    std::fflush(stderr);
  };
}

nlohmann::json options_json(const LocalizeArgs& a) {
  nlohmann::json j{{"model", a.common.model},
                   {"method", a.method},
                   {"steps", a.steps},
                   {"quadrature", a.quadrature},
                   {"aggregate", a.aggregate},
                   {"languages", a.langs},
                   {"paper_compat", a.paper_compat},
                   {"seed", a.seed},
                   {"knprobe_version", KNPROBE_VERSION_STRING}};
  if (!a.mlama.empty())
    j["mlama"] = {{"root", a.mlama},
                  {"relations", a.relations},
                  {"sample", a.sample},
                  {"limit", a.limit},
                  {"require_correct", a.require_correct},
                  {"max_answer_tokens", a.max_answer_tokens}};
  return j;
}

/// Adds the run's options, unreadable fact lines and screening to `j` and writes it to
/// <out>/<name>.
void write_result(const LocalizeArgs& a, nlohmann::json& j, const std::string& name,
                  const std::vector<FactProblem>& problems,
                  const std::vector<SkippedFact>& filtered, nlohmann::json extra_options = {}) {
  j["options"] = options_json(a);
  if (extra_options.is_object()) j["options"].update(extra_options);
  for (const auto& p : problems) j["skipped"].push_back({{"line", p.line}, {"reason", p.reason}});
  j["screened_out"] = filtered.size();
  for (const auto& s : filtered)
    j["screening"].push_back({{"fact", s.fact}, {"language", s.language}, {"reason", s.reason}});
  fs::create_directories(a.out);
  std::ofstream(fs::path(a.out) / name) << j.dump(1) << "\n";
}

nlohmann::json dkn_options_json(const LocalizeArgs& a) {
  return {{"top", a.top},
          {"t_low", a.t_low},
          {"t_high", a.t_high},
          {"max_set_size", a.max_set_size},
          {"max_forward_passes", a.max_passes}};
}

DknOptions dkn_args(const LocalizeArgs& a) {
  DknOptions d;
  d.top = a.top;
  d.t_low = a.t_low;
  d.t_high = a.t_high;
  d.max_set_size = a.max_set_size;
  d.max_forward_passes = a.max_passes;
  return d;
}

/// --screen-only: the kept facts as a JSON Lines fact file <out>/facts.jsonl (input of --facts).
int write_facts_file(const LocalizeArgs& a, const std::vector<Fact>& facts,
                     const std::vector<SkippedFact>& filtered) {
  fs::create_directories(a.out);
  std::ofstream out(fs::path(a.out) / "facts.jsonl");
  for (const auto& f : facts)
    out << nlohmann::json{{"id", f.id},
                          {"relation", f.relation},
                          {"prompts", f.prompts},
                          {"answers", f.answers}}
               .dump()
        << "\n";
  std::printf("kept %zu facts (%zu screened out); wrote %s/facts.jsonl\n", facts.size(),
              filtered.size(), a.out.c_str());
  return 0;
}

int run_localize(const LocalizeArgs& a) {
  std::vector<FactProblem> problems;
  std::vector<Fact> facts = read_fact_args(a, problems);
  LocalizeOptions o;
  o.languages = a.langs;
  o.thresholds = parse_thresholds(a.thresholds);
  o.attribution = attribution_args(a);
  o.verify = !a.no_verify;
  o.seed = a.seed;
  return with_model(a.common, [&](const auto& model, const Tokenizer& tok) {
    const KnowledgeProbe probe(model, tok);
    std::vector<SkippedFact> filtered;
    prepare_facts(a, probe, tok, facts, filtered);
    if (a.screen_only) return write_facts_file(a, facts, filtered);
    o.progress = progress_printer(facts.size() * o.languages.size());
    const auto rep = localize(probe, facts, o);
    std::fprintf(stderr, "\n");
    fs::create_directories(fs::path(a.out) / "scores");
    for (const auto& f : rep.facts) {
      print_fact(f);
      for (const auto& [lang, r] : f.languages)
        xt::dump_npy((fs::path(a.out) / "scores" / (f.id + "." + lang + ".npy")).string(),
                     r.attribution.scores);
    }
    auto j = to_json(rep);
    write_result(a, j, "localize.json", problems, filtered, {{"thresholds", o.thresholds}});
    std::printf("\nsummary: %s\n", j["summary"].dump(1).c_str());
    for (const auto& s : rep.skipped)
      std::printf("skipped %s [%s]: %s\n", s.fact.c_str(), s.language.c_str(), s.reason.c_str());
    std::printf("wrote %s/localize.json and %s/scores/*.npy\n", a.out.c_str(), a.out.c_str());
    return 0;
  });
}

int run_dkn(const LocalizeArgs& a) {
  std::vector<FactProblem> problems;
  std::vector<Fact> facts = read_fact_args(a, problems);
  DknExperimentOptions o;
  o.languages = a.langs;
  o.attribution = attribution_args(a);
  o.dkn = dkn_args(a);
  return with_model(a.common, [&](const auto& model, const Tokenizer& tok) {
    const KnowledgeProbe probe(model, tok);
    std::vector<SkippedFact> filtered;
    prepare_facts(a, probe, tok, facts, filtered);
    o.progress = progress_printer(facts.size() * o.languages.size());
    const auto rep = degenerate_neurons(probe, facts, o);
    std::fprintf(stderr, "\n");
    auto j = to_json(rep);
    write_result(a, j, "dkn.json", problems, filtered, {{"dkn", dkn_options_json(a)}});
    for (const auto& r : rep.results) {
      std::printf("%s [%s] p0=%.3f %zu degenerate set(s) in %zu passes:", r.fact.c_str(),
                  r.language.c_str(), r.dkn.p0, r.dkn.degenerate.size(), r.dkn.forward_passes);
      for (const auto& set : r.dkn.degenerate) {
        std::printf(" {");
        for (std::size_t i = 0; i < set.size(); ++i)
          std::printf("%sL%d.%d", i ? " " : "", set[i].layer, set[i].unit);
        std::printf("}");
      }
      std::printf("\n");
    }
    std::printf("\nsummary: %s\n", j["summary"].dump(1).c_str());
    std::printf("wrote %s/dkn.json\n", a.out.c_str());
    return 0;
  });
}

int run_edit(const LocalizeArgs& a) {
  std::vector<FactProblem> problems;
  std::vector<Fact> facts = read_fact_args(a, problems);
  EditingOptions o;
  o.languages = a.langs;
  o.thresholds = parse_thresholds(a.thresholds);
  o.attribution = attribution_args(a);
  o.l1 = a.l1;
  o.l2 = a.l2;
  return with_model(a.common, [&](auto& model, const Tokenizer& tok) {
    std::vector<SkippedFact> filtered;
    {
      const KnowledgeProbe probe(model, tok);
      prepare_facts(a, probe, tok, facts, filtered);
    }
    o.progress = progress_printer(facts.size());
    const auto rep = cross_lingual_editing(model, tok, facts, o);
    std::fprintf(stderr, "\n");
    auto j = to_json(rep);
    write_result(a, j, "editing.json", problems, filtered,
                 {{"thresholds", o.thresholds}, {"l1", a.l1}, {"l2", a.l2}});
    std::printf("summary (set/mode/measured-in):\n");
    for (auto it = j["summary"].begin(); it != j["summary"].end(); ++it)
      std::printf("  %-34s %s\n", it.key().c_str(), it.value().dump().c_str());
    std::printf("wrote %s/editing.json\n", a.out.c_str());
    return 0;
  });
}

/// The fact-checking metrics as a Markdown table (test split first).
void print_factcheck_table(const FactCheckReport& rep) {
  std::set<std::string> languages;
  for (const auto& r : rep.relations) languages.insert(r.language);
  std::printf(
      "\n| language | split | checker | claims | precision | recall | F1 | accuracy | "
      "precision (ref) | F1 (ref) |\n|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& lang : languages)
    for (bool train : {false, true}) {
      const auto [dkn, base] = confusion(rep, lang, train);
      for (const auto& [who, c] : {std::pair{"DKN", dkn}, std::pair{"model top-1", base}})
        std::printf("| %s | %s | %s | %zu | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |\n",
                    lang.c_str(), train ? "train" : "test", who, c.total(), c.precision(),
                    c.recall(), c.f1(), c.accuracy(), c.precision_ref(), c.f1_ref());
    }
}

int run_factcheck(const LocalizeArgs& a) {
  std::vector<FactProblem> problems;
  std::vector<Fact> facts = read_fact_args(a, problems);
  FactCheckOptions o;
  o.languages = a.langs;
  o.attribution = attribution_args(a);
  o.dkn = dkn_args(a);
  o.wrong_per_fact = a.wrong;
  o.train_fraction = a.train_fraction;
  o.relation_fraction = a.relation_fraction;
  o.seed = a.seed;
  o.fixed_threshold = a.fixed_threshold;
  return with_model(a.common, [&](const auto& model, const Tokenizer& tok) {
    const KnowledgeProbe probe(model, tok);
    std::vector<SkippedFact> filtered;
    std::vector<Fact> pool;
    prepare_facts(a, probe, tok, facts, filtered, &pool);
    // per language: one DKN search per training fact + one attribution per claim
    const auto n_train =
        static_cast<std::size_t>(std::lround(a.train_fraction * static_cast<double>(facts.size())));
    o.progress = progress_printer((facts.size() * static_cast<std::size_t>(a.wrong + 1) + n_train) *
                                  o.languages.size());
    const auto rep = fact_check(probe, facts, pool, o);
    std::fprintf(stderr, "\n");
    auto j = to_json(rep);
    nlohmann::json extra{{"dkn", dkn_options_json(a)},
                         {"wrong_per_fact", a.wrong},
                         {"train_fraction", a.train_fraction},
                         {"relation_fraction", a.relation_fraction}};
    if (a.fixed_threshold) extra["fixed_threshold"] = *a.fixed_threshold;
    write_result(a, j, "factcheck.json", problems, filtered, extra);
    for (const auto& r : rep.relations)
      std::printf(
          "%s [%s]: %zu train / %zu test facts, %zu with DKN, relation set %zu neurons, "
          "θ = %.3g\n",
          r.relation.c_str(), r.language.c_str(), r.train_facts, r.test_facts, r.train_with_dkn,
          r.neurons.size(), r.threshold);
    print_factcheck_table(rep);
    for (const auto& s : rep.skipped)
      std::printf("skipped %s [%s]: %s\n", s.fact.c_str(), s.language.c_str(), s.reason.c_str());
    std::printf("wrote %s/factcheck.json\n", a.out.c_str());
    return 0;
  });
}

/// "xxh3_64:<hex>" over the bytes of the model's files (the GGUF file; the llama2.c checkpoint and
/// its tokenizer; every regular file of a Hugging Face directory, by name), for results headers.
std::string model_hash(const Common& c) {
  std::vector<fs::path> files;
  const fs::path p(c.model);
  if (fs::is_directory(p)) {
    for (const auto& e : fs::directory_iterator(p))
      if (e.is_regular_file()) files.push_back(e.path());
  } else {
    files.push_back(p);
    if (p.extension() == ".bin")
      files.push_back(c.tokenizer.empty() ? p.parent_path() / "tok512.bin" : fs::path(c.tokenizer));
  }
  if (!c.tokenizer.empty() && fs::is_directory(c.tokenizer))
    for (const auto& e : fs::directory_iterator(c.tokenizer))
      if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> st(XXH3_createState(), XXH3_freeState);
  KNPROBE_REQUIRE(st && XXH3_64bits_reset(st.get()) == XXH_OK, Error, "xxhash: cannot start");
  std::vector<char> buf(1 << 22);
  for (const auto& f : files) {
    const std::string name = f.filename().string();
    XXH3_64bits_update(st.get(), name.data(), name.size() + 1);
    std::ifstream in(f, std::ios::binary);
    KNPROBE_REQUIRE(in.good(), FormatError, f.string(), ": cannot open to hash");
    while (in) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      XXH3_64bits_update(st.get(), buf.data(), static_cast<std::size_t>(in.gcount()));
    }
  }
  char out[40];
  std::snprintf(out, sizeof out, "xxh3_64:%016llx",
                static_cast<unsigned long long>(XXH3_64bits_digest(st.get())));
  return out;
}

std::atomic<bool> g_stop{false};

extern "C" void on_stop_signal(int sig) {
  if (g_stop.exchange(true)) std::_Exit(128 + sig);  // a second signal: stop at once
}

/// The rank and size of MPI_COMM_WORLD when started by mpirun (MPI initialised here), else {0, 1}.
std::pair<int, int> mpi_start(int& argc, char**& argv) {
#ifdef KNPROBE_HAS_MPI
  const bool launched =
      std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMIX_RANK") || std::getenv("PMI_RANK");
  if (launched && argc > 1 && std::string_view(argv[1]) == "run") {
    int provided = 0, rank = 0, size = 1;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    return {rank, size};
  }
#else
  (void)argc;
  (void)argv;
#endif
  return {0, 1};
}

void mpi_barrier([[maybe_unused]] int size) {
#ifdef KNPROBE_HAS_MPI
  if (size > 1) MPI_Barrier(MPI_COMM_WORLD);
#endif
}

void mpi_finish() {
#ifdef KNPROBE_HAS_MPI
  int init = 0;
  MPI_Initialized(&init);
  if (init) MPI_Finalize();
#endif
}

/// Stops every rank (an error on one rank would leave the others waiting at a barrier).
void mpi_abort([[maybe_unused]] int size, [[maybe_unused]] int rc) {
#ifdef KNPROBE_HAS_MPI
  if (size > 1) MPI_Abort(MPI_COMM_WORLD, rc);
#endif
  mpi_finish();
}

/// Reduces `flag` over the ranks with logical AND (every rank finished its shard).
bool mpi_all([[maybe_unused]] int size, bool flag) {
#ifdef KNPROBE_HAS_MPI
  if (size > 1) {
    int in = flag ? 1 : 0, out = 0;
    MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return out == 1;
  }
#endif
  return flag;
}

int run_run(const LocalizeArgs& a, int rank, int size) {
  KNPROBE_REQUIRE(!a.out.empty() && a.out != "knprobe-out", ArgumentError,
                  "run: --out RESULTS.jsonl is required");
  KNPROBE_REQUIRE(a.top_per_layer >= 0 && a.top_per_layer <= 4096, ArgumentError,
                  "--top-per-layer must be in [0, 4096]");
  std::vector<FactProblem> problems;
  std::vector<Fact> facts = read_fact_args(a, problems);
  RunOptions o;
  o.localize.languages = a.langs;
  o.localize.thresholds = parse_thresholds(a.thresholds);
  o.localize.attribution = attribution_args(a);
  o.localize.verify = !a.no_verify;
  o.localize.seed = a.seed;
  o.require_correct = a.require_correct;
  o.max_answer_tokens = a.max_answer_tokens;
  if (a.dkn) o.dkn = dkn_args(a);
  o.top_per_layer = a.top_per_layer;
  o.shard_rank = static_cast<std::size_t>(rank);
  o.shard_count = static_cast<std::size_t>(size);
  o.stop = &g_stop;
  const std::string hash = model_hash(a.common);
  return with_model(a.common, [&](const auto& model, const Tokenizer& tok) {
    const KnowledgeProbe probe(model, tok);
    LocalizeArgs sel = a;  // sampling and --limit only: screening is per fact, in the run
    sel.require_correct = false;
    std::vector<SkippedFact> unused;
    prepare_facts(sel, probe, tok, facts, unused);
    // The header: what makes results comparable (paths are informative, not identity).
    nlohmann::json opt{{"method", a.method},
                       {"steps", a.steps},
                       {"quadrature", a.quadrature},
                       {"aggregate", a.aggregate},
                       {"layers", a.layers},
                       {"paper_compat", a.paper_compat},
                       {"languages", a.langs},
                       {"thresholds", o.localize.thresholds},
                       {"verify", !a.no_verify},
                       {"seed", a.seed},
                       {"require_correct", a.require_correct},
                       {"max_answer_tokens", a.max_answer_tokens},
                       {"top_per_layer", a.top_per_layer},
                       {"dkn", a.dkn ? dkn_options_json(a) : nlohmann::json(nullptr)}};
    if (!a.mlama.empty())
      opt["mlama"] = {{"relations", a.relations}, {"sample", a.sample}, {"limit", a.limit}};
    nlohmann::json header{
        {"format", "knprobe-run/1"},
        {"knprobe_version", KNPROBE_VERSION_STRING},
        {"model",
         {{"objective", ArchTraits<std::decay_t<decltype(model)>>::objective == Objective::masked_lm
                            ? "masked_lm"
                            : "causal_lm"},
          {"layers", model.num_layers()},
          {"ffn_width", model.ffn_width()},
          {"hash", hash}}},
        {"facts", {{"count", facts.size()}, {"fingerprint", facts_fingerprint(facts)}}},
        {"options", opt},
        {"paths", {{"model", a.common.model}, {"facts", a.facts}, {"mlama", a.mlama}}}};
    const fs::path out(a.out);
    if (out.has_parent_path()) fs::create_directories(out.parent_path());
    fs::path mine = out;
    if (size > 1) {
      header["shard"] = {{"rank", rank}, {"count", size}};
      mine = fs::path(a.out + ".part-" + std::to_string(rank) + "-of-" + std::to_string(size));
    }
    RunSummary s;
    {
      io::ResultsFile file(mine, header, {"paths"});
      if (file.repaired())
        std::fprintf(stderr, "knprobe: %s: %s\n", mine.c_str(), file.repaired()->c_str());
      if (!file.records().empty())
        std::fprintf(stderr, "knprobe: resuming %s: %zu records already there\n", mine.c_str(),
                     file.records().size());
      const auto t0 = std::chrono::steady_clock::now();
      std::size_t first = SIZE_MAX;
      o.progress = [&](std::size_t done, std::size_t total, const std::string& what) {
        if (first == SIZE_MAX) first = done;
        const double el =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const std::size_t now = done - first;
        const double rate = el > 0 ? static_cast<double>(now) / el : 0.0;
        std::fprintf(stderr, "\r%s[%zu/%zu] %-36s %.2f items/s, ETA %.0fs   ",
                     size > 1 ? ("rank " + std::to_string(rank) + " ").c_str() : "", done + 1,
                     total, what.c_str(), rate,
                     rate > 0 ? static_cast<double>(total - done) / rate : 0.0);
        std::fflush(stderr);
      };
      s = run_dataset(probe, facts, file, o);
      std::fprintf(stderr, "\n");
    }
    std::printf("%s%s: %zu items, %zu already done, %zu computed (%zu failures)%s\n",
                size > 1 ? ("rank " + std::to_string(rank) + ": ").c_str() : "", mine.c_str(),
                s.items, s.resumed, s.computed, s.failed, s.stopped ? ", interrupted" : "");
    const bool all_done = mpi_all(size, !s.stopped);
    if (!all_done) {
      std::printf("interrupted: rerun the same command to resume\n");
      return 130;
    }
    mpi_barrier(size);
    if (rank == 0) {  // one canonical file: fact order, language order, LIKN last
      std::vector<io::ResultsContent> parts;
      if (size == 1) {
        parts.push_back(io::read_results(out));
      } else {
        for (int r = 0; r < size; ++r)
          parts.push_back(io::read_results(a.out + ".part-" + std::to_string(r) + "-of-" +
                                           std::to_string(size)));
      }
      auto merged_header = parts[0].header;
      merged_header.erase("shard");
      const auto recs = canonical_records(parts);
      io::write_results_atomic(out, merged_header, recs);
      std::size_t failures = 0, screened = 0;
      for (const auto& r : recs) {
        failures += r.value("record", "") == "failure";
        screened += r.value("record", "") == "screened_out";
      }
      std::printf("wrote %s: %zu records (%zu screened out, %zu failures)\n", out.c_str(),
                  recs.size(), screened, failures);
    }
    return 0;
  });
}

int run_report(const std::vector<std::string>& inputs, const std::string& factcheck,
               const std::string& fact, const std::string& out, const std::string& markdown) {
  KNPROBE_REQUIRE(!inputs.empty(), ArgumentError, "report: give at least one results file");
  std::vector<io::ResultsContent> runs;
  for (const auto& in : inputs) {
    runs.push_back(io::read_results(in));
    if (runs.back().repaired)
      std::fprintf(stderr, "knprobe: %s: %s\n", in.c_str(), runs.back().repaired->c_str());
  }
  ReportInput ri;
  for (std::size_t i = 0; i < runs.size(); ++i)
    ri.runs.push_back({inputs[i], runs[i].header, runs[i].records});
  if (!factcheck.empty()) {
    ri.factcheck = io::detail::read_json(factcheck);
    ri.factcheck_path = factcheck;
  }
  ri.fact = fact;
  const Report rep = build_report(ri);
  const fs::path o(out);
  if (o.has_parent_path()) fs::create_directories(o.parent_path());
  std::ofstream(o) << render_html(rep);
  std::printf("wrote %s\n", out.c_str());
  if (!markdown.empty()) {
    std::ofstream(markdown) << render_markdown(rep);
    std::printf("wrote %s\n", markdown.c_str());
  }
  return 0;
}

int run_predict(const Common& c, const std::string& prompt, int top) {
  KNPROBE_REQUIRE(top > 0 && top <= 1000, ArgumentError, "--top must be in [1, 1000]");
  return with_model(c, [&](const auto& model, const Tokenizer& tok) {
    const auto ids = tok.encode(prompt);
    const auto z = model.logits(model.trace(ids));
    Index last = z.rows() - 1;  // decoders: the next token; encoders: the [MASK]
    if constexpr (ArchTraits<std::decay_t<decltype(model)>>::objective == Objective::masked_lm) {
      const auto mask = tok.special().mask;
      const auto at = mask ? std::find(ids.begin(), ids.end(), *mask) : ids.end();
      KNPROBE_REQUIRE(at != ids.end(), ArgumentError, "encoder prompt '", prompt,
                      "' has no mask token");
      last = at - ids.begin();
    }
    std::vector<std::pair<float, int>> v;
    const float mx = z.row(last).maxCoeff();
    const double sum = (z.row(last).array() - mx).exp().sum();
    for (Index i = 0; i < z.cols(); ++i) v.push_back({z(last, i), static_cast<int>(i)});
    std::partial_sort(v.begin(), v.begin() + top, v.end(), std::greater<>());
    for (int k = 0; k < top; ++k)
      std::printf("%2d  p=%.4f  id=%-7d '%s'\n", k + 1, std::exp(v[k].first - mx) / sum,
                  v[k].second, tok.decode(std::vector<TokenId>{v[k].second}).c_str());
    return 0;
  });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"knprobe " KNPROBE_VERSION_STRING
               ": find, test and edit the neurons that store facts"};
  app.require_subcommand(1);
  LocalizeArgs la;
  auto* loc =
      app.add_subcommand("localize", "attribute facts to FFN neurons, select, verify, LIKN");
  auto* dkn = app.add_subcommand("dkn", "search degenerate knowledge neurons of facts");
  auto* edit = app.add_subcommand(
      "edit", "cross-lingual editing: LIKN vs per-language sets, activations and weight edits");
  auto* fc = app.add_subcommand(
      "factcheck", "fact-checking with relation DKN sets vs the model-prediction baseline");
  auto* run = app.add_subcommand(
      "run", "localize a dataset into a resumable JSON Lines results file (shards under mpirun)");
  for (auto* c : {loc, dkn, edit, fc, run}) {
    c->add_option("--model", la.common.model,
                  ".gguf file, llama2.c .bin checkpoint or Hugging Face gpt2 / bert directory")
        ->required();
    c->add_option("--tokenizer", la.common.tokenizer,
                  "llama2.c tokenizer.bin (default: tok512.bin beside the model) or tokenizer "
                  "directory (default: the model directory)");
    c->add_option("--facts", la.facts, "JSON Lines facts file");
    c->add_option("--mlama", la.mlama, "mLAMA root directory (one folder per language)");
    c->add_option("--relations", la.relations, "mLAMA relations (default all)")->delimiter(',');
    c->add_option("--sample", la.sample, "mLAMA: a seeded sample of this many facts (0 = all)");
    c->add_flag("--require-correct", la.require_correct,
                "keep facts whose answer the model predicts (top-1) in every language");
    c->add_option("--max-answer-tokens", la.max_answer_tokens,
                  "with --require-correct: drop answers longer than this many tokens");
    c->add_option("--limit", la.limit, "stop after this many (kept) facts");
    c->add_option("--prompt", la.prompt, "a single prompt (with --answer and one --langs)");
    c->add_option("--answer", la.answer, "its answer, as it continues the prompt");
    c->add_option("--langs", la.langs, "languages")->delimiter(',');
    c->add_option("--method", la.method, "amig or ig");
    c->add_option("--steps", la.steps, "integration steps m");
    c->add_option("--quadrature", la.quadrature,
                  "left (Dai), trapezoid, gauss, or linspace (EleutherAI knowledge-neurons)");
    c->add_option("--aggregate", la.aggregate, "multi-token answers: sum or mean");
    c->add_option("--layers", la.layers, "layers to attribute (default all)")->delimiter(',');
    c->add_flag("--paper-compat", la.paper_compat, "reproduce the reference code's quirks");
    c->add_option("--seed", la.seed, "seed of the random controls and of --sample");
    c->add_option(
        "--out", la.out,
        c == run ? "results file (JSON Lines; resumed when it exists)" : "output directory");
  }
  for (auto* c : {loc, edit, run})
    c->add_option("--threshold", la.thresholds,
                  "LANG=T selection threshold (default en=0.3, zh=0.2)");
  edit->add_option("--l1", la.l1, "erase strength λ1 (default 1)");
  edit->add_option("--l2", la.l2, "edit strength λ2 (default 8)");
  for (auto* c : {loc, run})
    c->add_flag("--no-verify", la.no_verify, "skip the suppress/enhance checks");
  loc->add_flag(
      "--screen-only", la.screen_only,
      "only select (sample, screen, limit) and write the kept facts to <out>/facts.jsonl");
  run->add_flag("--dkn", la.dkn, "also search degenerate neurons of every (fact, language)");
  run->add_option("--top-per-layer", la.top_per_layer,
                  "per-layer top units kept in each record for heatmaps (default 8)");
  for (auto* c : {dkn, fc, run}) {
    c->add_option("--top", la.top, "candidates: the top neurons by attribution (default 20)");
    c->add_option("--t-low", la.t_low, "harmless: p(S) >= (1 - T_low) p0 (default 0.2)");
    c->add_option("--t-high", la.t_high, "harmful: p(S) < (1 - T_high) p0 (default 0.25)");
    c->add_option("--max-set-size", la.max_set_size, "2 = the paper's pairs");
    c->add_option("--max-passes", la.max_passes, "forward-pass budget per (fact, language)");
  }
  fc->add_option("--wrong", la.wrong, "wrong objects per fact, from the same relation (default 5)");
  fc->add_option("--train-fraction", la.train_fraction, "per-relation train split (default 0.8)");
  fc->add_option("--relation-fraction", la.relation_fraction,
                 "relation DKN set: neurons counted > fraction * max count (default 0.7)");
  fc->add_option("--fixed-threshold", la.fixed_threshold,
                 "decide with this threshold instead of fitting one on the training split "
                 "(reference code: 1e-6)");
  Common pc;
  std::string prompt;
  int top = 5;
  auto* pred = app.add_subcommand("predict", "print the model's most likely next tokens");
  pred->add_option("--model", pc.model)->required();
  pred->add_option("--tokenizer", pc.tokenizer);
  pred->add_option("--prompt", prompt)->required();
  pred->add_option("--top", top);
  std::vector<std::string> report_inputs;
  std::string report_factcheck, report_fact, report_out = "knprobe-report.html", report_md;
  auto* rep = app.add_subcommand(
      "report", "a self-contained HTML report (SVG figures) and Markdown tables of results files");
  rep->add_option("results", report_inputs, "results files of `knprobe run`")->required();
  rep->add_option("--factcheck", report_factcheck, "factcheck.json of `knprobe factcheck`");
  rep->add_option("--fact", report_fact, "fact id of the attribution heatmap (default: first)");
  rep->add_option("--out", report_out, "HTML file to write (default knprobe-report.html)");
  rep->add_option("--markdown", report_md, "also write the tables as Markdown to this file");
  const auto [rank, size] = mpi_start(argc, argv);
  CLI11_PARSE(app, argc, argv);
  try {
    if (*run) {
      struct sigaction sa {};
      sa.sa_handler = on_stop_signal;
      sigemptyset(&sa.sa_mask);
      sigaction(SIGINT, &sa, nullptr);
      sigaction(SIGTERM, &sa, nullptr);
      const int rc = run_run(la, rank, size);
      mpi_finish();
      return rc;
    }
    if (*rep)
      return run_report(report_inputs, report_factcheck, report_fact, report_out, report_md);
    if (*loc) return run_localize(la);
    if (*dkn) return run_dkn(la);
    if (*edit) return run_edit(la);
    if (*fc) return run_factcheck(la);
    return run_predict(pc, prompt, top);
  } catch (const knprobe::Error& e) {
    std::fprintf(stderr, "knprobe: error: %s\n", e.what());
    mpi_abort(size, 2);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "knprobe: unexpected error: %s\n", e.what());
    mpi_abort(size, 3);
    return 3;
  }
}
