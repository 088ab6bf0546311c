// knprobe localize: attribute facts to FFN neurons, select, verify (suppress / enhance, with K
// unrelated facts drawn from every fact read and two random controls), LIKN across languages.
// Writes <out>/localize.json and the full score tensors <out>/scores/<fact>.<lang>.npy (file names
// made safe: see scores_file in the JSON for each fact's file).
#include <xtensor/xnpy.hpp>

#include "cli.hpp"
#include "knprobe/experiments/run_records.hpp"

namespace fs = std::filesystem;

namespace knprobe::cli {
namespace {

struct LocalizeArgs {
  ModelArgs model;
  FactArgs facts;
  AttributionArgs attribution;
  ThresholdArgs thresholds;
  ControlArgs controls;
  std::string out = "knprobe-out";
  bool no_verify = false, screen_only = false;
  double drop_generic = 0;
};

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
        "\n      suppress %s (unrelated %s, |unrelated| %s, controls %s / %s)   enhance %s "
        "(unrelated %s, |unrelated| %s, controls %s / %s)\n",
        pct(r.suppress.related).c_str(), pct(r.suppress.unrelated).c_str(),
        pct(r.suppress.unrelated_abs).c_str(), pct(r.suppress.control).c_str(),
        pct(r.suppress.control_magnitude).c_str(), pct(r.enhance.related).c_str(),
        pct(r.enhance.unrelated).c_str(), pct(r.enhance.unrelated_abs).c_str(),
        pct(r.enhance.control).c_str(), pct(r.enhance.control_magnitude).c_str());
    for (const auto& n : r.suppress.notes) std::printf("      note: %s\n", n.c_str());
  }
  if (f.languages.size() > 1) {
    std::printf("  LIKN %zu:", f.likn.size());
    for (const auto& n : f.likn) std::printf(" L%d.%d", n.layer, n.unit);
    for (const auto& [lang, e] : f.likn_suppress)
      std::printf("   suppress in %s %s", lang.c_str(), pct(e.related).c_str());
    std::printf("\n");
  }
}

/// --screen-only: the kept facts as a JSON Lines fact file <out>/facts.jsonl (input of --facts).
int write_facts_file(const std::string& out, const std::vector<Fact>& facts,
                     const std::vector<SkippedFact>& filtered) {
  std::string text;
  for (const auto& f : facts)
    text +=
        nlohmann::json{
            {"id", f.id}, {"relation", f.relation}, {"prompts", f.prompts}, {"answers", f.answers}}
            .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
        "\n";
  io::write_file_atomic(fs::path(out) / "facts.jsonl", text);
  std::printf("kept %zu facts (%zu screened out); wrote %s/facts.jsonl\n", facts.size(),
              filtered.size(), out.c_str());
  return k_ok;
}

/// The score file of each fact id: a safe, unique file-name stem (never a path out of `out`).
std::map<std::string, std::string> score_stems(const std::vector<Fact>& facts) {
  std::map<std::string, std::string> stem;
  std::map<std::string, std::string> owner;
  for (const auto& f : facts) {
    const std::string s = io::safe_file_stem(f.id);
    const auto [it, fresh] = owner.emplace(s, f.id);
    KNPROBE_REQUIRE(fresh || it->second == f.id, IoError, "facts '", it->second, "' and '", f.id,
                    "' would write the same score file '", s, "'");
    stem[f.id] = s;
  }
  return stem;
}

int run(const LocalizeArgs& a) {
  a.facts.validate();
  a.attribution.validate();
  LocalizeOptions o;
  o.languages = a.facts.langs;
  if (!a.screen_only)  // screening decides on ranks / probabilities, not on a threshold
    o.thresholds = a.thresholds.resolve(a.facts.langs);
  o.attribution = a.attribution.options();
  o.verify = !a.no_verify;
  o.seed = a.facts.seed;
  a.controls.apply(o);
  o.generic_fraction = a.drop_generic;
  prepare_output_folder(a.out);
  std::vector<FactProblem> problems;
  std::vector<Fact> facts = read_fact_args(a.facts, problems);
  return with_model(a.model, [&](const auto& model, const Tokenizer& tok) {
    a.attribution.check_layers(model.num_layers());
    KnowledgeProbe probe(model, tok);
    probe.set_max_tokens(a.attribution.max_tokens);
    std::vector<SkippedFact> filtered;
    std::vector<Fact> pool;  // unrelated facts come from every fact read, not only those kept
    // Screening verdicts are kept in <out>/screening.jsonl as they are decided: an interrupted
    // scan resumes there (same model, rule and languages) instead of starting over.
    std::optional<ScreeningCache> cache;
    if (a.facts.screening())
      cache = ScreeningCache{fs::path(a.out) / "screening.jsonl", model_hash(a.model)};
    prepare_facts(a.facts, probe, tok, facts, filtered, &pool, cache);
    if (a.screen_only) return write_facts_file(a.out, facts, filtered);
    o.unrelated_pool = &pool;
    const auto stems = score_stems(facts);  // before any work: a clash is found now, not later
    const fs::path scores = fs::path(a.out) / "scores";
    io::create_output_folder(scores);
    o.progress = progress_printer(facts.size() * o.languages.size());
    const auto rep = localize(probe, facts, o);
    std::fprintf(stderr, "\n");
    auto j = to_json(rep);
    for (std::size_t k = 0; k < rep.facts.size(); ++k) {
      const auto& f = rep.facts[k];
      print_fact(f);
      for (const auto& [lang, r] : f.languages) {
        const std::string file = stems.at(f.id) + "." + lang + ".npy";
        io::write_file_atomic(scores / file, xt::dump_npy(r.attribution.scores));
        j["facts"][k]["languages"][lang]["scores_file"] = "scores/" + file;
      }
    }
    auto opts = options_json(a.model, a.facts, a.attribution);
    opts["thresholds"] = o.thresholds;
    opts["controls"] = a.controls.to_json();
    opts["controls"]["unrelated_from"] = "every fact read, before sampling, screening and --limit";
    opts["controls"]["unrelated_pool_size"] = pool.size();
    opts["drop_generic"] = a.drop_generic;
    write_result(a.out, j, "localize.json", opts, problems, filtered);
    std::printf("\nsummary: %s\n", j["summary"].dump(1).c_str());
    for (const auto& s : rep.skipped)
      std::printf("skipped %s [%s]: %s\n", s.fact.c_str(), s.language.c_str(), s.reason.c_str());
    std::printf("wrote %s/localize.json and %s/scores/*.npy\n", a.out.c_str(), a.out.c_str());
    return k_ok;
  });
}

}  // namespace

Command add_localize(CLI::App& app) {
  auto args = std::make_shared<LocalizeArgs>();
  auto* c = app.add_subcommand("localize", "attribute facts to FFN neurons, select, verify, LIKN");
  args->model.add(c);
  args->facts.add(c);
  args->attribution.add(c);
  args->thresholds.add(c);
  args->controls.add(c);
  c->add_option("--out", args->out, "output directory");
  c->add_flag("--no-verify", args->no_verify, "skip the suppress/enhance checks");
  c->add_option("--drop-generic", args->drop_generic,
                "Dai's refinement: drop from a fact's set the neurons selected for more than this "
                "share of the facts of other relations (0 = off, the default; the summary reports "
                "recurrence either way)")
      ->check(number_in(0, 1, false, true));
  c->add_flag("--screen-only", args->screen_only,
              "only select (sample, screen, limit) and write the kept facts to <out>/facts.jsonl");
  return {c, [args] { return run(*args); }};
}

}  // namespace knprobe::cli
