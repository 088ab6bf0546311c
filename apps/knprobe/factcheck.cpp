// knprobe factcheck: fact-checking with relation DKN sets vs the model-prediction baseline
// (docs/METHOD.md §7); writes <out>/factcheck.json and prints the metrics table.
#include <algorithm>
#include <cmath>
#include <set>

#include "cli.hpp"
#include "knprobe/experiments/fact_check.hpp"

namespace knprobe::cli {
namespace fs = std::filesystem;
namespace {

struct FactCheckArgs {
  ModelArgs model;
  FactArgs facts;
  AttributionArgs attribution;
  DknArgs dkn;
  ThresholdArgs thresholds;
  std::string out = "knprobe-out", fit = "cross-fit", dkn_from;
  int bootstrap = 2000;
  int wrong = 5;
  double train_fraction = 0.8, relation_fraction = 0.7;
  std::optional<double> fixed_threshold;
};

/// The fact-checking metrics as a Markdown table: held-out claims (with bootstrap 95 % intervals
/// over facts), the paper's 1:1 variant, then the claims θ was fitted on (not evidence).
void print_factcheck_table(const FactCheckReport& rep) {
  std::set<std::string> languages;
  for (const auto& r : rep.relations) languages.insert(r.language);
  std::printf(
      "\n| language | claims | checker | n | precision | recall | F1 [95%% CI] | accuracy | "
      "precision (ref) | F1 (ref) |\n|---|---|---|---|---|---|---|---|---|---|\n");
  const std::pair<ClaimSplit, const char*> splits[] = {{ClaimSplit::test, "test"},
                                                       {ClaimSplit::test_1to1, "test 1:1"},
                                                       {ClaimSplit::fit, "θ fit (in-sample)"}};
  const std::pair<Checker, const char*> checkers[] = {{Checker::dkn, "DKN"},
                                                      {Checker::top1, "model top-1"},
                                                      {Checker::probability, "P(candidate) ≥ θp"}};
  for (const auto& lang : languages)
    for (const auto& [split, sname] : splits)
      for (const auto& [who, cname] : checkers) {
        const auto c = confusion(rep, lang, who, split);
        std::string f1 = std::isnan(c.f1()) ? "n/a" : fmt_number(c.f1(), 3);
        if (split != ClaimSplit::fit)
          if (const auto ci = confusion_intervals(rep, lang, who, split);
              !ci.is_null() && !ci["f1"].is_null())
            f1 += " [" + fmt_number(ci["f1"][0].get<double>(), 3) + ", " +
                  fmt_number(ci["f1"][1].get<double>(), 3) + "]";
        auto r = [](double x) { return std::isnan(x) ? std::string("n/a") : fmt_number(x, 3); };
        std::printf("| %s | %s | %s | %zu | %s | %s | %s | %s | %s | %s |\n", lang.c_str(), sname,
                    cname, c.total(), r(c.precision()).c_str(), r(c.recall()).c_str(), f1.c_str(),
                    r(c.accuracy()).c_str(), r(c.precision_ref()).c_str(), r(c.f1_ref()).c_str());
      }
}

int run(const FactCheckArgs& a) {
  a.facts.validate();
  a.attribution.validate();
  a.dkn.validate();
  FactCheckOptions o;
  o.languages = a.facts.langs;
  o.attribution = a.attribution.options();
  o.dkn = a.dkn.options();
  o.wrong_per_fact = a.wrong;
  o.train_fraction = a.train_fraction;
  o.relation_fraction = a.relation_fraction;
  o.seed = a.facts.seed;
  o.fixed_threshold = a.fixed_threshold;
  o.fit = a.fit == "in-sample" ? FactCheckFit::in_sample : FactCheckFit::cross_fit;
  o.thresholds = a.thresholds.resolve(a.facts.langs);
  o.bootstrap.resamples = a.bootstrap;
  prepare_output_folder(a.out);
  std::vector<FactProblem> problems;
  std::vector<Fact> facts = read_fact_args(a.facts, problems);
  return with_model(a.model, [&](const auto& model, const Tokenizer& tok) {
    a.attribution.check_layers(model.num_layers());
    KnowledgeProbe probe(model, tok);
    probe.set_max_tokens(a.attribution.max_tokens);
    std::vector<SkippedFact> filtered;
    std::vector<Fact> pool;
    const std::vector<Fact> as_read = facts;
    prepare_facts(a.facts, probe, tok, facts, filtered, &pool);
    if (!a.dkn_from.empty()) {  // the run must have searched as this command would
      nlohmann::json same = selection_options(a.attribution, o.thresholds, a.facts.langs);
      same["dkn"] = a.dkn.to_json();
      const auto run =
          read_matching_run("--dkn-from", a.dkn_from, a.model, a.facts, as_read, probe, tok, same);
      o.given_dkn =
          run_dkn_results(run.content.header, run.content.records, a.dkn_from, &run.facts);
      std::size_t pairs = 0, found = 0;
      for (const auto& f : facts)
        for (const auto& l : o.languages) {
          ++pairs;
          const auto g = o.given_dkn.find(f.id);
          found += g != o.given_dkn.end() && g->second.count(l);
        }
      std::fprintf(stderr,
                   "knprobe: --dkn-from: %s holds the DKN searches of %zu of %zu (fact, "
                   "language) pairs; the training facts' searches are taken from there\n",
                   a.dkn_from.c_str(), found, pairs);
    }
    auto opts = options_json(a.model, a.facts, a.attribution);
    opts["dkn"] = a.dkn.to_json();
    opts["wrong_per_fact"] = a.wrong;
    opts["train_fraction"] = a.train_fraction;
    opts["relation_fraction"] = a.relation_fraction;
    if (a.fixed_threshold) opts["fixed_threshold"] = *a.fixed_threshold;
    opts["fit"] = a.fit;
    opts["thresholds"] = o.thresholds;
    opts["bootstrap"] = a.bootstrap;
    // Every (language, relation) goes to <out>/factcheck.partial.jsonl when it is done; an
    // interrupted run resumes there (same model, facts, pool of wrong objects and outcome
    // options, else refused).
    auto id = outcome_options(opts);
    id["pool"] = facts_fingerprint(pool);
    if (!a.dkn_from.empty()) {  // the searches taken from a run decide too
      nlohmann::json given;
      for (const auto& [fid, by_lang] : o.given_dkn)
        for (const auto& [l, d] : by_lang) {
          nlohmann::json sets = nlohmann::json::array();
          for (const auto& set : d.degenerate) {
            nlohmann::json v = nlohmann::json::array();
            for (const auto& n : set) v.push_back({n.layer, n.unit});
            sets.push_back(v);
          }
          given[fid][l] = {sets, d.forward_passes, d.searched};
        }
      id["given_dkn"] = json_digest(given);
    }
    const fs::path partial = fs::path(a.out) / "factcheck.partial.jsonl";
    auto file = open_checkpoint(
        partial, "knprobe-factcheck-checkpoint/1", a.model, facts, id,
        {{"model", a.model.model}, {"facts", a.facts.facts}, {"dkn_from", a.dkn_from}});
    const auto& recs = file->records();
    for (std::size_t k = 0; k < recs.size(); ++k) {
      const std::string where = partial.string() + ": record " + std::to_string(k + 2);
      auto r = relation_outcome_from_json(recs[k], model.num_layers(), model.ffn_width(), where);
      KNPROBE_REQUIRE(std::ranges::count(o.languages, r.language), FormatError, where,
                      ": language '", r.language, "' is not one of this run's");
      // the relation and every claim's fact must be this run's (facts with that relation and a
      // prompt and answer in that language)
      std::set<std::string> members;
      for (const auto& f : facts)
        if (f.relation == r.relation && f.prompts.count(r.language) && f.answers.count(r.language))
          members.insert(f.id);
      KNPROBE_REQUIRE(!members.empty(), FormatError, where, ": relation '", r.relation, "' [",
                      r.language, "] has no facts in this run");
      for (const auto& c : r.claims)
        KNPROBE_REQUIRE(members.count(c.fact), FormatError, where, ": a claim of fact '", c.fact,
                        "', not a fact of relation '", r.relation, "' [", r.language,
                        "] in this run");
      auto key = std::pair{r.language, r.relation};
      KNPROBE_REQUIRE(!o.resumed.count(key), FormatError, where, ": relation '", r.relation, "' [",
                      r.language, "] again");
      o.resumed.emplace(std::move(key), std::move(r));
    }
    o.progress = progress_printer(fact_check_steps(facts, pool, o));  // those not resumed
    o.on_relation = [&](const RelationOutcome& r) {
      auto rec = to_json(r);
      rec["record"] = "relation";
      file->append(std::move(rec));
    };
    const auto rep = fact_check(probe, facts, pool, o);
    std::fprintf(stderr, "\n");
    auto j = to_json(rep);
    if (!a.dkn_from.empty()) opts["dkn_from"] = a.dkn_from;
    write_result(a.out, j, "factcheck.json", opts, problems, filtered);
    file.reset();  // factcheck.json holds every outcome now
    fs::remove(partial);
    for (const auto& r : rep.relations)
      std::printf(
          "%s [%s]: %zu train / %zu test facts, %zu with DKN, relation set %zu neurons, "
          "θ = %.3g, θp = %.3g\n",
          r.relation.c_str(), r.language.c_str(), r.train_facts, r.test_facts, r.train_with_dkn,
          r.neurons.size(), r.threshold, r.threshold_p);
    print_factcheck_table(rep);
    for (const auto& s : rep.skipped)
      std::printf("skipped %s [%s]: %s\n", s.fact.c_str(), s.language.c_str(), s.reason.c_str());
    std::printf("wrote %s/factcheck.json\n", a.out.c_str());
    return k_ok;
  });
}

}  // namespace

Command add_factcheck(CLI::App& app) {
  auto args = std::make_shared<FactCheckArgs>();
  auto* c = app.add_subcommand(
      "factcheck", "fact-checking with relation DKN sets vs the model-prediction baseline");
  args->model.add(c);
  args->facts.add(c);
  args->attribution.add(c);
  args->dkn.add(c);
  args->thresholds.add(c);
  c->add_option("--out", args->out, "output directory");
  c->add_option("--fit", args->fit,
                "cross-fit: relation set and θ from two disjoint folds of the training facts "
                "(default); in-sample: both from all training facts (the reference code)")
      ->check(one_of({"cross-fit", "in-sample"}));
  c->add_option("--bootstrap", args->bootstrap,
                "resamples of the bootstrap 95 % confidence intervals (default 2000)")
      ->check(integer_in(100, 1000000));
  c->add_option("--wrong", args->wrong,
                "wrong objects per fact, from the same relation (default 5)")
      ->check(integer_in(1, 1000));
  c->add_option("--train-fraction", args->train_fraction, "per-relation train split (default 0.8)")
      ->check(number_in(0, 1, true, true));
  c->add_option("--relation-fraction", args->relation_fraction,
                "relation DKN set: neurons counted > fraction * max count (default 0.7)")
      ->check(number_in(0, 1, false, true));
  c->add_option("--fixed-threshold", args->fixed_threshold,
                "decide with this threshold instead of fitting one on the training split "
                "(reference code: 1e-6)")
      ->check(number_in(-1e300, 1e300));
  c->add_option("--dkn-from", args->dkn_from,
                "take the training facts' DKN searches from this `knprobe run --dkn` results file "
                "instead of searching again (same model, facts, attribution, thresholds and DKN "
                "options; checked)");
  return {c, [args] { return run(*args); }};
}

}  // namespace knprobe::cli
