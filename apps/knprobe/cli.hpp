#pragma once
// Shared pieces of the knprobe subcommands (one file per subcommand beside this one): option
// groups that register their options with validators — so that a bad value is refused at parse
// time, with the valid range, before any work — and serialise themselves in one place; model
// loading; fact preparation; outputs written safely; exit codes.

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "knprobe/data/facts.hpp"
#include "knprobe/data/mlama.hpp"
#include "knprobe/experiments/localize.hpp"
#include "knprobe/experiments/run_records.hpp"
#include "knprobe/io/files.hpp"
#include "knprobe/io/hf_config.hpp"
#include "knprobe/io/results_file.hpp"
#include "knprobe/model/bert.hpp"
#include "knprobe/model/gpt2.hpp"
#include "knprobe/model/llama.hpp"
#include "knprobe/probe/degenerate.hpp"
#include "knprobe/tokenize/byte_bpe.hpp"
#include "knprobe/tokenize/llama2c_tokenizer.hpp"
#include "knprobe/tokenize/load.hpp"
#include "knprobe/tokenize/sentencepiece_bpe.hpp"
#include "knprobe/tokenize/wordpiece.hpp"
#include "knprobe/version.hpp"

namespace knprobe::cli {

/// Exit codes of the knprobe program (README "Exit codes").
inline constexpr int k_ok = 0;             ///< done
inline constexpr int k_bad_input = 1;      ///< an input file, model or data is wrong, or I/O failed
inline constexpr int k_usage = 2;          ///< an option is missing, malformed or out of range
inline constexpr int k_internal = 3;       ///< a bug: please report it
inline constexpr int k_interrupted = 130;  ///< SIGINT / SIGTERM (a run resumes where it stopped)

// --- validators (the message names the valid range; CLI11 prefixes the option) ---------------

/// A decimal integer (no sign other than '-', no hex / octal) in [lo, hi].
CLI::Validator integer_in(long long lo, long long hi);
/// A finite decimal number in [lo, hi] (open ends when lo_open / hi_open).
CLI::Validator number_in(double lo, double hi, bool lo_open = false, bool hi_open = false);
/// One of `values`.
CLI::Validator one_of(std::vector<std::string> values);
/// A language code: 1-16 of A-Z a-z 0-9 _ -.
CLI::Validator language_code();
/// LANG=T with a language code and T in (0, 1].
CLI::Validator threshold_spec();
/// Valid UTF-8 text of 1..max_bytes bytes.
CLI::Validator text_of(std::size_t max_bytes);

// --- option groups -----------------------------------------------------------------------------

/// --model, --tokenizer.
struct ModelArgs {
  std::string model, tokenizer;
  void add(CLI::App* c);
};

/// Where facts come from and which are kept: --facts / --mlama / --prompt + --answer, --langs,
/// --relations, --sample, --limit, --require-correct, --max-answer-tokens, --seed.
struct FactArgs {
  std::string facts, mlama, prompt, answer, screen;
  std::vector<std::string> langs{"en", "zh"}, relations;
  std::size_t sample = 0, limit = 0, per_relation = 0, per_answer = 0;
  bool require_correct = false;
  int max_answer_tokens = 0;
  std::uint64_t seed = 42;
  void add(CLI::App* c);
  /// Cross-option checks (UsageError): one source of facts, --prompt with one language, no
  /// duplicate languages.
  void validate() const;
  /// Whether facts are screened (--require-correct or --screen).
  bool screening() const { return require_correct || !screen.empty(); }
  /// The screening rule of --screen (top1 when only --require-correct).
  ScreenRule screen_rule() const;
};

/// --method, --steps, --quadrature, --aggregate, --layers, --paper-compat, --max-tokens.
struct AttributionArgs {
  std::string method = "amig", quadrature = "left", aggregate = "sum";
  int steps = 20, max_tokens = 512;
  std::vector<int> layers;
  bool paper_compat = false;
  void add(CLI::App* c);
  void validate() const;
  AttributionOptions options() const;
  nlohmann::json to_json() const;
  /// UsageError when a --layers entry is not a layer of the loaded model.
  void check_layers(int num_layers) const;
};

/// --threshold LANG=T (repeatable; defaults en=0.3, zh=0.2).
struct ThresholdArgs {
  std::vector<std::string> specs;
  void add(CLI::App* c);
  /// The threshold of every language of `langs` (UsageError naming a language without one).
  std::map<std::string, double> resolve(const std::vector<std::string>& langs) const;
};

/// The controls and intervals of docs/METHOD.md §10: --unrelated K, --control-band, --bootstrap R.
struct ControlArgs {
  int unrelated = 10, bootstrap = 2000;
  double control_band = 0.02;
  bool with_bootstrap = true;  ///< false for `run`, which writes per-item records, no summaries
  void add(CLI::App* c, bool offer_bootstrap = true);
  /// Copies the settings into `o` (LocalizeOptions or EditingOptions).
  template <class O>
  void apply(O& o) const {
    o.unrelated = unrelated;
    o.bootstrap.resamples = bootstrap;
    if constexpr (requires { o.control_band; }) o.control_band = control_band;
  }
  nlohmann::json to_json() const;
};

/// --dkn-candidates, --top, --t-low, --t-high, --max-set-size, --max-passes.
struct DknArgs {
  std::string candidates = "knowledge-neurons";
  int top = 20, max_set_size = 2;
  double t_low = 0.2, t_high = 0.25;
  std::size_t max_passes = 100000;
  void add(CLI::App* c);
  void validate() const;
  DknOptions options() const;
  nlohmann::json to_json() const;
};

// --- models ------------------------------------------------------------------------------------

/// Which loader a --model path takes.
enum class ModelKind { gguf, llama2c, hf_gpt2, hf_bert, hf_llama };
/// The kind of `a.model`, or UsageError / FormatError naming what is wrong with the path.
ModelKind model_kind(const ModelArgs& a);
/// "xxh3_64:<hex>" over the bytes of the model's files (for results headers).
std::string model_hash(const ModelArgs& a);

/// Loads the model named by `a` and calls fn(model, tokenizer) with a mutable model (weight edits
/// change it in place and restore it).
template <class F>
int with_model(const ModelArgs& a, F&& fn) {
  namespace fs = std::filesystem;
  const fs::path p(a.model);
  switch (model_kind(a)) {
    case ModelKind::gguf: {
      // The weights stay in the file's quantized blocks (dequantized tile by tile in each
      // product): loading is a file mapping, and forward / gradient passes read 4-7x fewer bytes.
      const auto f = std::make_shared<const io::GgufFile>(p);
      QuantizedLlamaModel m(load_llama_gguf_quantized(f));
      std::fprintf(stderr, "knprobe: loaded %s (%s, %d layers × %d neurons)\n",
                   p.filename().c_str(), m.spec().family(), m.num_layers(), m.ffn_width());
      // SentencePiece ("llama": Gemma, Llama 2) or byte-level BPE ("gpt2": Llama 3, Qwen, SmolLM).
      // (One instantiation of the commands for both: they use the Tokenizer interface only.)
      std::unique_ptr<Tokenizer> tok;
      if (f->has("tokenizer.ggml.model") && f->get_string("tokenizer.ggml.model") == "gpt2")
        tok = std::make_unique<ByteBpe>(ByteBpe::from_gguf(*f));
      else
        tok = std::make_unique<SentencePieceBpe>(SentencePieceBpe::from_gguf(*f));
      return fn(m, *tok);
    }
    case ModelKind::llama2c: {
      auto m = LlamaModel<float>::load(p);
      const fs::path tp =
          a.tokenizer.empty() ? p.parent_path() / "tok512.bin" : fs::path(a.tokenizer);
      const Llama2cTokenizer tok(tp, m.vocab_size());
      return fn(m, tok);
    }
    case ModelKind::hf_gpt2: {
      auto m = Gpt2Model<float>::load(p);
      return fn(m, ByteBpe::from_directory(a.tokenizer.empty() ? p : fs::path(a.tokenizer)));
    }
    case ModelKind::hf_llama: {
      // Weights as F32 blocks of the quantized storage (one model type for GGUF and HF files);
      // the tokenizer from tokenizer.json: byte-level BPE (Llama 3, Qwen, SmolLM) or
      // SentencePiece-style BPE (Llama 2, Mistral 7B, Gemma).
      QuantizedLlamaModel m(load_llama_safetensors(p).to_quantized_storage());
      const auto tok = load_tokenizer_json(a.tokenizer.empty() ? p : fs::path(a.tokenizer));
      return fn(m, *tok);
    }
    case ModelKind::hf_bert: {
      auto m = BertModel<float>::load(p);
      return fn(m, WordPiece::from_directory(a.tokenizer.empty() ? p : fs::path(a.tokenizer)));
    }
  }
  return k_internal;
}

// --- facts -------------------------------------------------------------------------------------

/// Facts from --facts or --prompt/--answer (mLAMA is read once the model is known); unreadable
/// lines go to `problems` and are reported on stderr.
std::vector<Fact> read_fact_args(const FactArgs& a, std::vector<FactProblem>& problems);

/// Says on stderr what opening a results file found: a torn last line cut off, a file system
/// without flock (then no second writer is detected), and how many records are resumed.
void announce_opened(const io::ResultsFile& file);
/// Where screening keeps its verdicts as it goes (a resumable results file), and what makes them
/// valid: the model's hash (with the rule and languages, the file's header).
struct ScreeningCache {
  std::filesystem::path path;
  std::string model_hash;
};

/// mLAMA facts (when --mlama) and screening (when --require-correct) for the loaded model; with
/// `pool`, also every fact before sampling and screening (fact-checking draws wrong objects there).
/// With `cache`, every screening verdict is appended to cache->path as it is decided and a rerun
/// with the same model, rule and languages screens only the facts not yet there.
template <class M>
void prepare_facts(const FactArgs& a, const KnowledgeProbe<M>& probe, const Tokenizer& tok,
                   std::vector<Fact>& facts, std::vector<SkippedFact>& filtered,
                   std::vector<Fact>* pool = nullptr,
                   const std::optional<ScreeningCache>& cache = std::nullopt) {
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
  if (a.screening()) {
    AnswerableOptions ao;
    ao.languages = a.langs;
    ao.rule = a.screen_rule();
    ao.limit = a.limit;
    ao.per_relation = a.per_relation;
    ao.per_answer = a.per_answer;
    ao.progress = [&](std::size_t scanned, std::size_t kept) {
      std::fprintf(stderr, "\rscreening (%s): %zu scanned, %zu kept   ", ao.rule.describe().c_str(),
                   scanned, kept);
    };
    std::optional<io::ResultsFile> verdicts;
    if (cache) {
      // What a verdict depends on besides the fact's text (the key): the model, the rule (exact
      // numbers), the languages, the longest prompt accepted (a refusal names it) and the code.
      verdicts.emplace(cache->path,
                       nlohmann::json{{"screening",
                                       {{"rule", ao.rule.describe()},
                                        {"max_rank", ao.rule.max_rank},
                                        {"min_probability", ao.rule.min_probability},
                                        {"languages", ao.languages},
                                        {"max_answer_tokens", ao.rule.max_answer_tokens},
                                        {"max_tokens", probe.max_tokens()}}},
                                      {"model", {{"hash", cache->model_hash}}},
                                      {"knprobe", KNPROBE_VERSION_STRING}});
      announce_opened(*verdicts);
      const auto& recs = verdicts->records();
      for (std::size_t i = 0; i < recs.size(); ++i) {
        const auto& r = recs[i];
        const std::string where = cache->path.string() + ": record " + std::to_string(i + 2) + " ";
        KNPROBE_REQUIRE(r.is_object() && r.value("record", nlohmann::json()) == "verdict" &&
                            r.contains("key") && r.contains("language") && r.contains("reason"),
                        FormatError, where,
                        "is not a screening verdict ({record: verdict, key, language, reason}); "
                        "delete the file to screen again");
        ao.known[io::json_string(r["key"], where + "key")] = {
            io::json_string(r["language"], where + "language"),
            io::json_string(r["reason"], where + "reason")};
      }
      if (!ao.known.empty())
        std::fprintf(stderr, "knprobe: %zu screening verdicts resumed from %s\n", ao.known.size(),
                     cache->path.c_str());
      ao.on_verdict = [&](const std::string& key, const std::string& lang, const std::string& why) {
        verdicts->append(
            {{"record", "verdict"}, {"key", key}, {"language", lang}, {"reason", why}});
      };
    }
    facts = answerable_facts(probe, facts, ao, filtered);
    std::fprintf(stderr, "\n");
  } else if (a.limit && facts.size() > a.limit) {
    facts.resize(a.limit);
  }
  KNPROBE_REQUIRE(!facts.empty(), ArgumentError, "no facts left to process");
}

// --- outputs -----------------------------------------------------------------------------------

/// Creates the output folder `out` before any work (IoError naming it when that fails).
std::filesystem::path prepare_output_folder(const std::string& out);
/// Writes `j` (finite numbers only) to `path` atomically.
void write_json_file(const std::filesystem::path& path, const nlohmann::json& j, int indent = 1);
/// The options of a run as recorded in its output.
nlohmann::json options_json(const ModelArgs& m, const FactArgs& f, const AttributionArgs& a);

// --- reusing a run ----------------------------------------------------------------------------

/// What a reused run's selections depend on, as its header's "options" hold them: the attribution
/// options (not --max-tokens, a limit) and the thresholds of `langs`.
nlohmann::json selection_options(const AttributionArgs& a,
                                 const std::map<std::string, double>& thresholds,
                                 const std::vector<std::string>& langs);

/// A `knprobe run` results file that an experiment reuses instead of recomputing (`edit
/// --sets-from`, `factcheck --dkn-from`), checked by require_run_header_matches (a run with more
/// thresholds serves a command over fewer languages) against this model, the
/// fact list as `knprobe run` fingerprints it — `listed`, the facts as read, sampled and limited
/// but not screened — and `options`. The records are parsed against `listed` (index, fact id).
struct MatchingRun {
  io::ResultsContent content;
  std::vector<Fact> facts;  ///< the run's fact list
};
template <class M>
MatchingRun read_matching_run(const std::string& option, const std::string& path,
                              const ModelArgs& model_args, const FactArgs& a,
                              std::vector<Fact> listed, const KnowledgeProbe<M>& probe,
                              const Tokenizer& tok, const nlohmann::json& options) {
  FactArgs sel = a;
  sel.require_correct = false;
  sel.screen.clear();
  std::vector<SkippedFact> unused;
  prepare_facts(sel, probe, tok, listed, unused);
  MatchingRun run{io::read_results(path), std::move(listed)};
  require_run_header_matches(option, path, run.content.header, model_hash(model_args),
                             facts_fingerprint(run.facts), options);
  return run;
}
/// Adds the run's options, unreadable fact lines and screening to `j` and writes it to
/// <out>/<name>.
void write_result(const std::string& out, nlohmann::json& j, const std::string& name,
                  nlohmann::json options, const std::vector<FactProblem>& problems,
                  const std::vector<SkippedFact>& filtered);
/// Opens (creating or resuming) a command's checkpoint at `path`, a results file whose header
/// holds what decides resuming — `format`, the knprobe version, the model's hash, the facts
/// processed (count, fingerprint) and `options`, every option the outcomes depend on — and, not
/// deciding, `paths`. Says on stderr when a torn last line was cut off, when the file cannot be
/// locked and how many records are resumed. ResumeError (exit 1) when the file holds another
/// run's outcomes, naming the first difference.
std::unique_ptr<io::ResultsFile> open_checkpoint(const std::filesystem::path& path,
                                                 const std::string& format, const ModelArgs& m,
                                                 const std::vector<Fact>& facts,
                                                 nlohmann::json options, nlohmann::json paths);
/// "fnv1a64:<hex>" of `j` as compact JSON: a short identity for data an outcome depends on (the
/// sets or DKN searches taken from a run) in a checkpoint's header.
std::string json_digest(const nlohmann::json& j);
/// `options_json` without what does not change an outcome (paths, the version — in the header —,
/// the mLAMA settings, which the facts' fingerprint covers, and the summary's bootstrap).
nlohmann::json outcome_options(nlohmann::json options);
/// Progress with rate and ETA on stderr, one call per (fact, language).
std::function<void(const std::string&)> progress_printer(std::size_t total);
/// "+12%" / "   n/a".
std::string pct(const std::optional<double>& x);
/// x with `digits` decimals ("%.*f").
std::string fmt_number(double x, int digits);

// --- subcommands ---------------------------------------------------------------------------------

/// A registered subcommand: its CLI11 app and what runs it after parsing.
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

/// Set by SIGINT / SIGTERM; long commands stop at the next safe point.
extern std::atomic<bool> g_stop;

Command add_localize(CLI::App& app);
Command add_dkn(CLI::App& app);
Command add_edit(CLI::App& app);
Command add_factcheck(CLI::App& app);
Command add_run(CLI::App& app, int rank, int size);
Command add_report(CLI::App& app);
Command add_predict(CLI::App& app);

}  // namespace knprobe::cli
