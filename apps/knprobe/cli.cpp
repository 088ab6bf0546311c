// The shared, non-template pieces of the knprobe subcommands (see cli.hpp).
#include "cli.hpp"

#include <charconv>
#include <chrono>
#include <cmath>
#include <deque>
#include <memory>
#include <set>

#include "knprobe/tokenize/unicode.hpp"
#include "knprobe/version.hpp"
#include "xxhash.h"

namespace fs = std::filesystem;

namespace knprobe::cli {

std::atomic<bool> g_stop{false};

// --- validators ----------------------------------------------------------------------------------

namespace {

std::string range_text(double lo, double hi, bool lo_open, bool hi_open) {
  std::ostringstream os;
  os << (lo_open ? "(" : "[") << lo << ", " << hi << (hi_open ? ")" : "]");
  return os.str();
}

/// The decimal integer of the whole of `s` ("-1" yes; "0x10", "010"-as-octal, "1e3", "3.5" no).
std::optional<long long> parse_decimal(const std::string& s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  long long v = 0;
  const auto* end = s.data() + s.size();
  const auto [p, ec] = std::from_chars(s.data(), end, v, 10);
  if (ec != std::errc() || p != end) return std::nullopt;
  return v;
}

std::optional<double> parse_number(const std::string& s) {
  if (s.empty() || s.size() > 64) return std::nullopt;
  double v = 0;
  const auto* end = s.data() + s.size();
  const auto [p, ec] = std::from_chars(s.data(), end, v);
  if (ec != std::errc() || p != end || !std::isfinite(v)) return std::nullopt;
  return v;
}

}  // namespace

CLI::Validator integer_in(long long lo, long long hi) {
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  return CLI::Validator(
      [lo, hi, range](std::string& in) -> std::string {
        const auto v = parse_decimal(in);
        if (!v || *v < lo || *v > hi)
          return "expected a decimal integer in " + range + ", got '" + in.substr(0, 40) + "'";
        return {};
      },
      "INT in " + range);
}

CLI::Validator number_in(double lo, double hi, bool lo_open, bool hi_open) {
  const std::string range = range_text(lo, hi, lo_open, hi_open);
  return CLI::Validator(
      [=](std::string& in) -> std::string {
        const auto v = parse_number(in);
        if (!v || *v < lo || *v > hi || (lo_open && *v == lo) || (hi_open && *v == hi))
          return "expected a finite number in " + range + ", got '" + in.substr(0, 40) + "'";
        return {};
      },
      "NUMBER in " + range);
}

CLI::Validator one_of(std::vector<std::string> values) {
  std::string list;
  for (const auto& v : values) list += (list.empty() ? "" : ", ") + v;
  return CLI::Validator(
      [values, list](std::string& in) -> std::string {
        if (std::find(values.begin(), values.end(), in) == values.end())
          return "expected one of " + list + ", got '" + in.substr(0, 40) + "'";
        return {};
      },
      "one of " + list);
}

CLI::Validator language_code() {
  return CLI::Validator(
      [](std::string& in) -> std::string {
        if (!valid_language_code(in))
          return "a language code is 1-16 of A-Z a-z 0-9 _ -, got '" + in.substr(0, 40) + "'";
        return {};
      },
      "LANG");
}

CLI::Validator threshold_spec() {
  return CLI::Validator(
      [](std::string& in) -> std::string {
        const auto eq = in.find('=');
        if (eq == std::string::npos || !valid_language_code(in.substr(0, eq)))
          return "expected LANG=T (a language code, then T in (0, 1]), got '" + in.substr(0, 40) +
                 "'";
        const auto v = parse_number(in.substr(eq + 1));
        if (!v || *v <= 0 || *v > 1)
          return "expected LANG=T with T a number in (0, 1], got '" + in.substr(0, 40) + "'";
        return {};
      },
      "LANG=T");
}

CLI::Validator text_of(std::size_t max_bytes) {
  return CLI::Validator(
      [max_bytes](std::string& in) -> std::string {
        if (in.empty()) return "must not be empty";
        if (in.size() > max_bytes)
          return "is " + std::to_string(in.size()) + " bytes; at most " +
                 std::to_string(max_bytes) + " are accepted";
        try {
          (void)unicode::decode_utf8(in);
        } catch (const Error&) {
          return "is not valid UTF-8";
        }
        return {};
      },
      "TEXT");
}

// --- option groups -------------------------------------------------------------------------------

void ModelArgs::add(CLI::App* c) {
  c->add_option("--model", model,
                ".gguf file, llama2.c .bin checkpoint or Hugging Face gpt2 / bert / Llama-family "
                "directory")
      ->required()
      ->check(CLI::ExistingPath);
  c->add_option("--tokenizer", tokenizer,
                "llama2.c tokenizer.bin (default: tok512.bin beside the model) or tokenizer "
                "directory (default: the model directory)")
      ->check(CLI::ExistingPath);
}

void FactArgs::add(CLI::App* c) {
  constexpr long long k_count = 1LL << 40;
  c->add_option("--facts", facts, "JSON Lines facts file")->check(CLI::ExistingFile);
  c->add_option("--mlama", mlama, "mLAMA root directory (one folder per language)")
      ->check(CLI::ExistingDirectory);
  c->add_option("--relations", relations, "mLAMA relations (default all)")->delimiter(',');
  c->add_option("--sample", sample, "mLAMA: a seeded sample of this many facts (0 = all)")
      ->check(integer_in(0, k_count));
  c->add_flag("--require-correct", require_correct,
              "keep facts whose answer the model predicts (top-1) in every language "
              "(= --screen top1)");
  c->add_option("--screen", screen,
                "keep facts the model knows in every language: top1, rank:K (every answer token "
                "in the top K) or prob:P (P(answer) >= P)")
      ->check(CLI::Validator(
          [](std::string& s) -> std::string {
            if (s == "top1") return {};
            const auto colon = s.find(':');
            const std::string kind = s.substr(0, colon),
                              value = colon == std::string::npos ? "" : s.substr(colon + 1);
            if (kind == "rank") {
              std::string v = value;
              return integer_in(1, 1000000)(v).empty() ? "" : "rank:K needs K in [1, 1000000]";
            }
            if (kind == "prob") {
              std::string v = value;
              return number_in(0, 1, true, false)(v).empty() ? "" : "prob:P needs P in (0, 1]";
            }
            return "expected top1, rank:K or prob:P";
          },
          "top1|rank:K|prob:P"));
  c->add_option("--per-relation", per_relation,
                "with screening: keep at most this many facts per relation, visiting relations "
                "round-robin (0 = no cap)")
      ->check(integer_in(0, k_count));
  c->add_option("--per-answer", per_answer,
                "with screening: keep at most this many facts per (relation, answer) (0 = no cap)")
      ->check(integer_in(0, k_count));
  c->add_option("--max-answer-tokens", max_answer_tokens,
                "with --require-correct: drop answers longer than this many tokens (0 = any)")
      ->check(integer_in(0, 4096));
  c->add_option("--limit", limit, "stop after this many (kept) facts (0 = all)")
      ->check(integer_in(0, k_count));
  c->add_option("--prompt", prompt, "a single prompt (with --answer and one --langs)")
      ->check(text_of(k_max_fact_text));
  c->add_option("--answer", answer, "its answer, as it continues the prompt")
      ->check(text_of(k_max_fact_text));
  c->add_option("--langs", langs, "languages")->delimiter(',')->check(language_code());
  c->add_option("--seed", seed, "seed of the random controls and of --sample")
      ->check(integer_in(0, std::numeric_limits<long long>::max()));
}

void FactArgs::validate() const {
  KNPROBE_REQUIRE(facts.empty() || mlama.empty(), UsageError, "give --facts or --mlama, not both");
  if (facts.empty() && mlama.empty()) {
    KNPROBE_REQUIRE(!prompt.empty() && !answer.empty(), UsageError,
                    "give --facts FILE, --mlama DIR, or both --prompt and --answer");
    KNPROBE_REQUIRE(langs.size() == 1, UsageError, "--prompt/--answer take exactly one --langs");
  } else {
    KNPROBE_REQUIRE(prompt.empty() && answer.empty(), UsageError,
                    "--prompt/--answer cannot be combined with --facts or --mlama");
  }
  KNPROBE_REQUIRE(!langs.empty(), UsageError, "--langs is empty");
  const std::set<std::string> unique(langs.begin(), langs.end());
  KNPROBE_REQUIRE(unique.size() == langs.size(), UsageError, "--langs names a language twice");
  KNPROBE_REQUIRE(relations.empty() || !mlama.empty(), UsageError,
                  "--relations selects mLAMA relations: it needs --mlama");
  KNPROBE_REQUIRE(screening() || (per_relation == 0 && per_answer == 0), UsageError,
                  "--per-relation / --per-answer balance the screened facts: give --screen or "
                  "--require-correct");
}

ScreenRule FactArgs::screen_rule() const {
  ScreenRule r;
  r.max_answer_tokens = max_answer_tokens;
  if (screen.rfind("rank:", 0) == 0) {
    r.kind = ScreenRule::Kind::rank;
    r.max_rank = std::stoi(screen.substr(5));
  } else if (screen.rfind("prob:", 0) == 0) {
    r.kind = ScreenRule::Kind::probability;
    r.min_probability = std::stod(screen.substr(5));
  }
  return r;
}

void AttributionArgs::add(CLI::App* c) {
  c->add_option("--method", method, "amig or ig")->check(one_of({"amig", "ig"}));
  c->add_option("--steps", steps, "integration steps m")->check(integer_in(1, 1000));
  c->add_option("--quadrature", quadrature,
                "left (Dai), trapezoid, gauss, or linspace (EleutherAI knowledge-neurons)")
      ->check(one_of({"left", "trapezoid", "gauss", "linspace"}));
  c->add_option("--aggregate", aggregate, "multi-token answers: sum or mean")
      ->check(one_of({"sum", "mean"}));
  c->add_option("--layers", layers, "layers to attribute (default all)")
      ->delimiter(',')
      ->check(integer_in(0, 4095));
  c->add_flag("--paper-compat", paper_compat, "reproduce the reference code's quirks");
  c->add_option("--max-tokens", max_tokens,
                "longest prompt + answer accepted, in tokens (default 512; AMIG costs T passes "
                "of T tokens)")
      ->check(integer_in(1, 1 << 20));
}

void AttributionArgs::validate() const {
  const std::set<int> unique(layers.begin(), layers.end());
  KNPROBE_REQUIRE(unique.size() == layers.size(), UsageError, "--layers names a layer twice");
}

AttributionOptions AttributionArgs::options() const {
  AttributionOptions o;
  o.method = method == "ig" ? Method::ig : Method::amig;
  o.steps = steps;
  o.quadrature = quadrature == "gauss"       ? Quadrature::gauss_legendre
                 : quadrature == "trapezoid" ? Quadrature::trapezoid
                 : quadrature == "linspace"  ? Quadrature::linspace
                                             : Quadrature::left_riemann;
  o.aggregation = aggregate == "mean" ? TokenAggregation::mean : TokenAggregation::sum;
  o.layers = layers;
  o.paper_compat = paper_compat;
  return o;
}

nlohmann::json AttributionArgs::to_json() const {
  return {{"method", method},        {"steps", steps},   {"quadrature", quadrature},
          {"aggregate", aggregate},  {"layers", layers}, {"paper_compat", paper_compat},
          {"max_tokens", max_tokens}};
}

void AttributionArgs::check_layers(int num_layers) const {
  for (int l : layers)
    KNPROBE_REQUIRE(l < num_layers, UsageError, "--layers: layer ", l,
                    " does not exist (the model has layers 0..", num_layers - 1, ")");
}

void ThresholdArgs::add(CLI::App* c) {
  c->add_option("--threshold", specs, "LANG=T selection threshold (default en=0.3, zh=0.2)")
      ->check(threshold_spec());
}

std::map<std::string, double> ThresholdArgs::resolve(const std::vector<std::string>& langs) const {
  std::map<std::string, double> t{{"en", 0.3}, {"zh", 0.2}};
  for (const auto& s : specs) {
    const auto eq = s.find('=');
    t[s.substr(0, eq)] = *parse_number(s.substr(eq + 1));  // checked by threshold_spec
  }
  for (const auto& lang : langs)
    KNPROBE_REQUIRE(t.count(lang), UsageError, "no --threshold for language '", lang,
                    "' (give --threshold ", lang, "=T)");
  return t;
}

void ControlArgs::add(CLI::App* c, bool offer_bootstrap) {
  with_bootstrap = offer_bootstrap;
  c->add_option("--unrelated", unrelated,
                "K facts of other relations (seeded draw) on which each set's locality is "
                "measured (default 10)")
      ->check(integer_in(1, 1000));
  c->add_option("--control-band", control_band,
                "magnitude-matched control: each neuron is replaced by a random unit of its "
                "layer whose |activation| rank is within this fraction of the layer (default "
                "0.02)")
      ->check(number_in(0, 0.5, true, false));
  if (offer_bootstrap)
    c->add_option("--bootstrap", bootstrap,
                  "resamples of the bootstrap 95 % confidence intervals (default 2000)")
        ->check(integer_in(100, 1000000));
}

nlohmann::json ControlArgs::to_json() const {
  nlohmann::json j{{"unrelated", unrelated}, {"control_band", control_band}};
  if (with_bootstrap) j["bootstrap"] = bootstrap;
  return j;
}

void DknArgs::add(CLI::App* c) {
  c->add_option("--dkn-candidates", candidates,
                "knowledge-neurons: the fact's selected neurons, strongest first (the paper); "
                "top-attributed: the top neurons by attribution among all units")
      ->check(one_of({"knowledge-neurons", "top-attributed"}));
  c->add_option("--top", top, "at most this many candidates (default 20)")
      ->check(integer_in(2, 1000));
  c->add_option("--t-low", t_low, "harmless: p(S) >= (1 - T_low) p0 (default 0.2)")
      ->check(number_in(0, 1, false, true));
  c->add_option("--t-high", t_high, "harmful: p(S) < (1 - T_high) p0 (default 0.25)")
      ->check(number_in(0, 1, true, false));
  c->add_option("--max-set-size", max_set_size, "2 = the paper's pairs")->check(integer_in(2, 8));
  c->add_option("--max-passes", max_passes, "forward-pass budget per (fact, language)")
      ->check(integer_in(1, 1LL << 40));
}

void DknArgs::validate() const {
  KNPROBE_REQUIRE(t_low <= t_high, UsageError, "--t-low ", t_low, " must not exceed --t-high ",
                  t_high);
}

DknOptions DknArgs::options() const {
  DknOptions d;
  d.candidates = candidates == "top-attributed" ? DknCandidates::top_attributed
                                                : DknCandidates::knowledge_neurons;
  d.top = top;
  d.t_low = t_low;
  d.t_high = t_high;
  d.max_set_size = max_set_size;
  d.max_forward_passes = max_passes;
  return d;
}

nlohmann::json DknArgs::to_json() const {
  return {{"candidates", candidates},
          {"top", top},
          {"t_low", t_low},
          {"t_high", t_high},
          {"max_set_size", max_set_size},
          {"max_forward_passes", max_passes}};
}

// --- models --------------------------------------------------------------------------------------

ModelKind model_kind(const ModelArgs& a) {
  const fs::path p(a.model);
  std::error_code ec;
  if (fs::is_directory(p, ec)) {  // Hugging Face directory: config.json says which backend
    const auto cfg = io::detail::read_json(p / "config.json");
    const auto type = cfg.value("model_type", nlohmann::json());
    if (type == "gpt2") return ModelKind::hf_gpt2;
    if (type == "bert") return ModelKind::hf_bert;
    if (type.is_string() && parse_llama_arch(type.get<std::string>())) return ModelKind::hf_llama;
    throw FormatError(a.model + "/config.json: model_type " + type.dump().substr(0, 64) +
                      " has no loader here (gpt2, bert, " + llama_arch_names() +
                      " directories are supported)");
  }
  io::require_regular_file(p, "model file");
  if (p.extension() == ".gguf") return ModelKind::gguf;
  if (p.extension() == ".bin") return ModelKind::llama2c;
  throw UsageError("--model '" + a.model +
                   "': expected a .gguf file, a llama2.c .bin checkpoint (with --tokenizer) or a "
                   "Hugging Face gpt2 / bert / Llama-family directory");
}

std::string model_hash(const ModelArgs& a) {
  std::vector<fs::path> files;
  const fs::path p(a.model);
  if (fs::is_directory(p)) {
    for (const auto& e : fs::directory_iterator(p))
      if (e.is_regular_file()) files.push_back(e.path());
  } else {
    files.push_back(p);
    if (p.extension() == ".bin")
      files.push_back(a.tokenizer.empty() ? p.parent_path() / "tok512.bin" : fs::path(a.tokenizer));
  }
  if (!a.tokenizer.empty() && fs::is_directory(a.tokenizer))
    for (const auto& e : fs::directory_iterator(a.tokenizer))
      if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> st(XXH3_createState(), XXH3_freeState);
  KNPROBE_REQUIRE(st && XXH3_64bits_reset(st.get()) == XXH_OK, Error, "xxhash: cannot start");
  std::vector<char> buf(1 << 22);
  for (const auto& f : files) {
    const std::string name = f.filename().string();
    XXH3_64bits_update(st.get(), name.data(), name.size() + 1);
    io::require_regular_file(f, "model file");
    const io::MappedFile m(f);
    XXH3_64bits_update(st.get(), m.data(), m.size());
  }
  char out[40];
  std::snprintf(out, sizeof out, "xxh3_64:%016llx",
                static_cast<unsigned long long>(XXH3_64bits_digest(st.get())));
  return out;
}

// --- facts
// -----------------------------------------------------------------------------------------

std::vector<Fact> read_fact_args(const FactArgs& a, std::vector<FactProblem>& problems) {
  std::vector<Fact> facts;
  if (!a.mlama.empty()) return facts;
  if (!a.facts.empty()) {
    auto ff = read_facts(a.facts);
    facts = std::move(ff.facts);
    problems = std::move(ff.problems);
  } else {
    facts.push_back({"cli", "cli", {{a.langs[0], a.prompt}}, {{a.langs[0], a.answer}}});
  }
  for (const auto& p : problems)
    std::fprintf(stderr, "knprobe: %s line %zu skipped: %s\n", a.facts.c_str(), p.line,
                 p.reason.c_str());
  return facts;
}

// --- outputs
// ---------------------------------------------------------------------------------------

fs::path prepare_output_folder(const std::string& out) {
  const fs::path dir(out);
  io::create_output_folder(dir);
  return dir;
}

void write_json_file(const fs::path& path, const nlohmann::json& j, int indent) {
  io::require_finite_json(j, path.string());
  io::write_file_atomic(
      path, j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

nlohmann::json selection_options(const AttributionArgs& a,
                                 const std::map<std::string, double>& thresholds,
                                 const std::vector<std::string>& langs) {
  nlohmann::json j = a.to_json();
  j.erase("max_tokens");  // a limit, not a parameter of the results
  for (const auto& l : langs) j["thresholds"][l] = thresholds.at(l);
  return j;
}

nlohmann::json options_json(const ModelArgs& m, const FactArgs& f, const AttributionArgs& a) {
  nlohmann::json j = a.to_json();
  j["model"] = m.model;
  j["languages"] = f.langs;
  j["seed"] = f.seed;
  j["knprobe_version"] = KNPROBE_VERSION_STRING;
  if (f.screening()) j["screen"] = f.screen_rule().describe();
  if (!f.mlama.empty())
    j["mlama"] = {{"root", f.mlama},
                  {"relations", f.relations},
                  {"sample", f.sample},
                  {"limit", f.limit},
                  {"require_correct", f.screening()},
                  {"screen", f.screening() ? f.screen_rule().describe() : ""},
                  {"per_relation", f.per_relation},
                  {"per_answer", f.per_answer},
                  {"max_answer_tokens", f.max_answer_tokens}};
  return j;
}

void write_result(const std::string& out, nlohmann::json& j, const std::string& name,
                  nlohmann::json options, const std::vector<FactProblem>& problems,
                  const std::vector<SkippedFact>& filtered) {
  j["options"] = std::move(options);
  for (const auto& p : problems) j["skipped"].push_back({{"line", p.line}, {"reason", p.reason}});
  j["screened_out"] = filtered.size();
  for (const auto& s : filtered)
    j["screening"].push_back({{"fact", s.fact}, {"language", s.language}, {"reason", s.reason}});
  write_json_file(fs::path(out) / name, j);
}

void announce_opened(const io::ResultsFile& file) {
  const char* path = file.path().c_str();
  if (file.repaired()) std::fprintf(stderr, "knprobe: %s: %s\n", path, file.repaired()->c_str());
  if (!file.locked())
    std::fprintf(stderr,
                 "knprobe: warning: %s: this file system cannot lock files (flock); make sure "
                 "no other command writes the same output\n",
                 path);
  if (!file.records().empty())
    std::fprintf(stderr, "knprobe: resuming %s: %zu records already there\n", path,
                 file.records().size());
}

std::unique_ptr<io::ResultsFile> open_checkpoint(const fs::path& path, const std::string& format,
                                                 const ModelArgs& m, const std::vector<Fact>& facts,
                                                 nlohmann::json options, nlohmann::json paths) {
  const auto header =
      make_checkpoint_header(format, model_hash(m), facts, std::move(options), std::move(paths));
  auto file = std::make_unique<io::ResultsFile>(path, header, std::vector<std::string>{"paths"});
  announce_opened(*file);
  return file;
}

std::string json_digest(const nlohmann::json& j) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "fnv1a64:%016llx",
                static_cast<unsigned long long>(knprobe::detail::fnv1a(j.dump())));
  return buf;
}

nlohmann::json outcome_options(nlohmann::json options) {
  for (const char* k : {"model", "mlama", "knprobe_version", "bootstrap"}) options.erase(k);
  if (options.contains("controls")) options["controls"].erase("bootstrap");
  return options;
}

std::function<void(const std::string&)> progress_printer(std::size_t total) {
  // The ETA uses the pace of the last k_window steps, not the mean since the start: a command's
  // phases differ in cost (edit --sets-from skips its first pass in no time).
  constexpr std::size_t k_window = 16;
  using Clock = std::chrono::steady_clock;
  struct State {
    std::size_t done = 0;
    std::deque<Clock::time_point> recent;
  };
  auto st = std::make_shared<State>();
  const auto t0 = Clock::now();
  st->recent.push_back(t0);
  return [=](const std::string& what) {
    const auto now = Clock::now();
    const double el = std::chrono::duration<double>(now - t0).count();
    ++st->done;
    st->recent.push_back(now);
    if (st->recent.size() > k_window + 1) st->recent.pop_front();
    const double span = std::chrono::duration<double>(now - st->recent.front()).count();
    const double left = st->done < total ? static_cast<double>(total - st->done) : 0.0;
    const double eta = span / static_cast<double>(st->recent.size() - 1) * left;
    std::fprintf(stderr, "\r[%zu/%zu] %-40.40s %.0fs elapsed, ETA %.0fs   ", st->done,
                 std::max(total, st->done), what.c_str(), el, eta);
    std::fflush(stderr);
  };
}

std::string fmt_number(double x, int digits) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", digits, x);
  return b;
}

std::string pct(const std::optional<double>& x) {
  if (!x) return "   n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%+5.0f%%", 100.0 * *x);
  return buf;
}

}  // namespace knprobe::cli
