// knprobe edit: cross-lingual editing (docs/METHOD.md §6): LIKN vs per-language sets, activation
// interventions and weight edits, reliability / generality / locality; writes <out>/editing.json.
#include <algorithm>

#include "cli.hpp"
#include "knprobe/experiments/editing.hpp"

namespace knprobe::cli {
namespace fs = std::filesystem;
namespace {

struct EditArgs {
  ModelArgs model;
  FactArgs facts;
  AttributionArgs attribution;
  ThresholdArgs thresholds;
  ControlArgs controls;
  std::string out = "knprobe-out", sign = "activation", sets_from;
  double l1 = 1.0, l2 = 8.0, drop_generic = 0;
  std::vector<double> doses;
};

/// The outcomes recorded in an edit checkpoint, by fact id, each checked against the facts of
/// this run (index, id) and the model's size; FormatError naming the record otherwise.
std::map<std::string, EditingOutcome> resumed_outcomes(const io::ResultsFile& file,
                                                       const std::vector<Fact>& facts,
                                                       const std::vector<std::string>& languages,
                                                       int layers, int width) {
  std::map<std::string, EditingOutcome> out;
  const auto& recs = file.records();
  for (std::size_t k = 0; k < recs.size(); ++k) {
    const auto& r = recs[k];
    const std::string where = file.path().string() + ": record " + std::to_string(k + 2);
    const auto index = io::json_int<std::size_t>(io::json_at(r, "index", where), 0,
                                                 facts.size() - 1, where + ": index");
    const std::string& kind = io::json_string(io::json_at(r, "record", where), where + ": record");
    const std::string& fid = io::json_string(io::json_at(r, "fact", where), where + ": fact");
    KNPROBE_REQUIRE(facts[index].id == fid, FormatError, where, ": fact '", fid, "' is not fact ",
                    index, " of this run ('", facts[index].id, "'); delete the file to start over");
    KNPROBE_REQUIRE(!out.count(fid), FormatError, where, ": fact '", fid, "' again");
    if (kind == "result") {
      auto res = editing_fact_from_json(r, layers, width, where);
      KNPROBE_REQUIRE(res.relation == facts[index].relation, FormatError, where, ": relation '",
                      res.relation, "' is not fact '", fid, "''s ('", facts[index].relation, "')");
      for (const auto& m : res.measures)
        for (const std::string* l : {&m.language, &m.source})
          KNPROBE_REQUIRE(std::ranges::count(languages, *l), FormatError, where,
                          ": a measure in language '", *l, "', not one of this run's");
      out[fid].result = std::move(res);
    } else if (kind == "skipped")
      out[fid].skipped = SkippedFact{
          fid, "", io::json_string(io::json_at(r, "reason", where), where + ": reason")};
    else
      throw FormatError(where + ": record '" + kind + "' is neither 'result' nor 'skipped'");
  }
  return out;
}

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
  if (const std::string why = knprobe::detail::doses_problem(a.doses); !why.empty())
    throw UsageError("--doses: " + why);
  o.doses = a.doses;
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
        // A refined run (`knprobe run --drop-generic F`) holds reduced sets: taken only with the
        // same --drop-generic, so that facts attributed here are refined alike. Refining the run's
        // sets again with F drops nothing more when this command edits the run's facts (the
        // counts only fall); over fewer facts (some skipped) a borderline neuron can be dropped
        // again, and dropped_generic then lists only that second round. An unrefined run's sets
        // may be refined here with any F.
        const double run_f = run.content.header.value("options", nlohmann::json::object())
                                 .value("drop_generic", 0.0);
        KNPROBE_REQUIRE(run_f == 0 || run_f == a.drop_generic, UsageError, "--sets-from ",
                        a.sets_from, ": the run's sets were refined with --drop-generic ", run_f,
                        ", this command's is ", a.drop_generic, "; use the same value");
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
    auto opts = options_json(a.model, a.facts, a.attribution);
    opts["thresholds"] = o.thresholds;
    opts["l1"] = a.l1;
    opts["l2"] = a.l2;
    opts["edit_sign"] = a.sign;
    opts["drop_generic"] = a.drop_generic;
    opts["minus_likn"] = o.minus_likn;
    opts["doses"] = a.doses;
    opts["controls"] = a.controls.to_json();
    // Every fact's outcome goes to <out>/editing.partial.jsonl as it is decided; an interrupted
    // run resumes there (same model, facts and outcome options, else refused).
    const fs::path partial = fs::path(a.out) / "editing.partial.jsonl";
    // The sets taken from a run decide too: a resumed fact was measured on the same ones.
    nlohmann::json id = outcome_options(opts);
    if (!a.sets_from.empty()) {
      nlohmann::json given;
      for (const auto& [fid, by_lang] : o.given_sets)
        for (const auto& [l, set] : by_lang) given[fid][l] = knprobe::detail::neurons_json(set);
      id["given_sets"] = json_digest(given);
    }
    auto file = open_checkpoint(
        partial, "knprobe-edit-checkpoint/1", a.model, facts, id,
        {{"model", a.model.model}, {"facts", a.facts.facts}, {"sets_from", a.sets_from}});
    o.resumed = resumed_outcomes(*file, facts, o.languages, model.num_layers(), model.ffn_width());
    if (!o.resumed.empty())
      std::fprintf(stderr, "knprobe: %zu of %zu facts already done\n", o.resumed.size(),
                   facts.size());
    o.on_fact = [&](const EditingOutcome& r) {
      const std::string& fid = r.result ? r.result->fact : r.skipped->fact;
      const auto at = std::ranges::find_if(facts, [&](const Fact& f) { return f.id == fid; });
      nlohmann::json rec = r.result ? to_json(*r.result)
                                    : nlohmann::json{{"fact", fid}, {"reason", r.skipped->reason}};
      rec["record"] = r.result ? "result" : "skipped";
      rec["index"] = static_cast<std::size_t>(at - facts.begin());
      file->append(std::move(rec));
    };
    o.progress = progress_printer(2 * facts.size());  // select, then measure
    const auto rep = cross_lingual_editing(model, tok, facts, o);
    std::fprintf(stderr, "\n");
    auto j = to_json(rep);
    if (!a.sets_from.empty()) opts["sets_from"] = a.sets_from;
    write_result(a.out, j, "editing.json", opts, problems, filtered);
    file.reset();  // editing.json holds every outcome now
    fs::remove(partial);
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
  c->add_option("--doses", args->doses,
                "dose–response: also erase / edit every set and control at these multiples of "
                "(λ1, λ2), e.g. 0.125,0.25,0.5 (modes erase@d, edit@d; at most 8, each in (0, 100] "
                "and not 1)")
      ->delimiter(',')
      ->check(number_in(0, 100, true, false));
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
