// knprobe edit: cross-lingual editing (docs/METHOD.md §6): LIKN vs per-language sets, activation
// interventions and weight edits, reliability / generality / locality; writes <out>/editing.json.
#include "cli.hpp"
#include "knprobe/experiments/editing.hpp"

namespace knprobe::cli {
namespace {

struct EditArgs {
  ModelArgs model;
  FactArgs facts;
  AttributionArgs attribution;
  ThresholdArgs thresholds;
  ControlArgs controls;
  std::string out = "knprobe-out", sign = "activation", sets_from;
  double l1 = 1.0, l2 = 8.0, drop_generic = 0;
};

int run(const EditArgs& a) {
  a.facts.validate();
  a.attribution.validate();
  EditingOptions o;
  o.languages = a.facts.langs;
  o.thresholds = a.thresholds.resolve(a.facts.langs);
  o.attribution = a.attribution.options();
  o.l1 = a.l1;
  o.sign = a.sign == "none" ? EditSign::none : EditSign::activation;
  o.seed = a.facts.seed;
  a.controls.apply(o);
  o.l2 = a.l2;
  o.max_tokens = a.attribution.max_tokens;
  o.generic_fraction = a.drop_generic;
  prepare_output_folder(a.out);
  std::vector<FactProblem> problems;
  std::vector<Fact> facts = read_fact_args(a.facts, problems);
  return with_model(a.model, [&](auto& model, const Tokenizer& tok) {
    a.attribution.check_layers(model.num_layers());
    std::vector<SkippedFact> filtered;
    {
      KnowledgeProbe probe(model, tok);
      probe.set_max_tokens(a.attribution.max_tokens);
      const std::vector<Fact> as_read = facts;
      prepare_facts(a.facts, probe, tok, facts, filtered);
      if (!a.sets_from.empty()) {  // the run must have selected as this command would
        nlohmann::json same = selection_options(a.attribution, o.thresholds, a.facts.langs);
        const auto run = read_matching_run("--sets-from", a.sets_from, a.model, a.facts, as_read,
                                           probe, tok, same);
        o.given_sets =
            run_selections(run.content.header, run.content.records, a.sets_from, &run.facts);
      }
    }
    if (!a.sets_from.empty()) {
      std::size_t found = 0;
      for (const auto& f : facts) found += o.given_sets.count(f.id);
      std::fprintf(stderr,
                   "knprobe: --sets-from: the selected sets of %zu of %zu facts are taken "
                   "from %s (the others are attributed)\n",
                   found, facts.size(), a.sets_from.c_str());
    }
    o.progress = progress_printer(2 * facts.size());  // select, then measure
    const auto rep = cross_lingual_editing(model, tok, facts, o);
    std::fprintf(stderr, "\n");
    auto j = to_json(rep);
    auto opts = options_json(a.model, a.facts, a.attribution);
    opts["thresholds"] = o.thresholds;
    opts["l1"] = a.l1;
    opts["l2"] = a.l2;
    opts["edit_sign"] = a.sign;
    opts["drop_generic"] = a.drop_generic;
    if (!a.sets_from.empty()) opts["sets_from"] = a.sets_from;
    opts["controls"] = a.controls.to_json();
    write_result(a.out, j, "editing.json", opts, problems, filtered);
    std::printf("summary (set/mode/measured-in):\n");
    for (auto it = j["summary"].begin(); it != j["summary"].end(); ++it)
      std::printf("  %-34s %s\n", it.key().c_str(), it.value().dump().c_str());
    std::printf("wrote %s/editing.json\n", a.out.c_str());
    return k_ok;
  });
}

}  // namespace

Command add_edit(CLI::App& app) {
  auto args = std::make_shared<EditArgs>();
  auto* c = app.add_subcommand(
      "edit", "cross-lingual editing: LIKN vs per-language sets, activations and weight edits");
  args->model.add(c);
  args->facts.add(c);
  args->attribution.add(c);
  args->thresholds.add(c);
  args->controls.add(c);
  c->add_option("--out", args->out, "output directory");
  c->add_option("--edit-sign", args->sign,
                "activation: erase / edit along each neuron's contribution a·v (sign of its "
                "activation, docs/METHOD.md §6; default); none: Dai's rule as written")
      ->check(one_of({"activation", "none"}));
  c->add_option("--l1", args->l1, "erase strength λ1 (default 1)")->check(number_in(0, 1e6));
  c->add_option("--l2", args->l2, "edit strength λ2 (default 8)")->check(number_in(0, 1e6));
  c->add_option("--drop-generic", args->drop_generic,
                "Dai's refinement before editing: drop from a fact's set the neurons selected for "
                "more than this share of the facts of other relations (0 = off, the default)")
      ->check(number_in(0, 1, false, true));
  c->add_option("--sets-from", args->sets_from,
                "take each fact's selected sets from this `knprobe run` results file instead of "
                "attributing again (same model, facts, attribution options and thresholds; "
                "checked)");
  return {c, [args] { return run(*args); }};
}

}  // namespace knprobe::cli
