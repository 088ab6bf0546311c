// knprobe dkn: search the degenerate knowledge neurons of facts (docs/METHOD.md §5); writes
// <out>/dkn.json.
#include "cli.hpp"
#include "knprobe/experiments/degenerate.hpp"

namespace knprobe::cli {
namespace {

struct DknCommandArgs {
  ModelArgs model;
  FactArgs facts;
  AttributionArgs attribution;
  DknArgs dkn;
  ThresholdArgs thresholds;
  std::string out = "knprobe-out";
};

int run(const DknCommandArgs& a) {
  a.facts.validate();
  a.attribution.validate();
  a.dkn.validate();
  DknExperimentOptions o;
  o.languages = a.facts.langs;
  o.attribution = a.attribution.options();
  o.dkn = a.dkn.options();
  o.thresholds = a.thresholds.resolve(a.facts.langs);
  prepare_output_folder(a.out);
  std::vector<FactProblem> problems;
  std::vector<Fact> facts = read_fact_args(a.facts, problems);
  return with_model(a.model, [&](const auto& model, const Tokenizer& tok) {
    a.attribution.check_layers(model.num_layers());
    KnowledgeProbe probe(model, tok);
    probe.set_max_tokens(a.attribution.max_tokens);
    std::vector<SkippedFact> filtered;
    prepare_facts(a.facts, probe, tok, facts, filtered);
    o.progress = progress_printer(facts.size() * o.languages.size());
    const auto rep = degenerate_neurons(probe, facts, o);
    std::fprintf(stderr, "\n");
    auto j = to_json(rep);
    auto opts = options_json(a.model, a.facts, a.attribution);
    opts["dkn"] = a.dkn.to_json();
    opts["thresholds"] = o.thresholds;
    write_result(a.out, j, "dkn.json", opts, problems, filtered);
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
    return k_ok;
  });
}

}  // namespace

Command add_dkn(CLI::App& app) {
  auto args = std::make_shared<DknCommandArgs>();
  auto* c = app.add_subcommand("dkn", "search degenerate knowledge neurons of facts");
  args->model.add(c);
  args->facts.add(c);
  args->attribution.add(c);
  args->dkn.add(c);
  args->thresholds.add(c);
  c->add_option("--out", args->out, "output directory");
  return {c, [args] { return run(*args); }};
}

}  // namespace knprobe::cli
