// knprobe run: localize a dataset into a resumable JSON Lines results file; under mpirun the facts
// are sharded over the ranks (rank r takes i ≡ r mod N and writes <out>.part-r-of-N; rank 0 merges
// them into the canonical file). With --drop-generic F, once the run is complete, a second
// resumable pass writes Dai's refinement of it (refine_run) to --refined-out, sharded the same way.
#include <chrono>

#include "cli.hpp"
#include "knprobe/experiments/run.hpp"
#include "knprobe/version.hpp"
#ifdef KNPROBE_HAS_MPI
#include <mpi.h>
#endif

namespace fs = std::filesystem;

namespace knprobe::cli {
namespace {

struct RunArgs {
  ModelArgs model;
  FactArgs facts;
  AttributionArgs attribution;
  ThresholdArgs thresholds;
  ControlArgs controls;
  DknArgs dkn_args;
  std::string out;
  bool no_verify = false, dkn = false;
  int top_per_layer = 8;
  double drop_generic = 0;
  bool random_drop = false;  ///< the refinement's control instead (RefineRule::random_drop)
  std::string
      refined_out;  ///< default: <out> with ".jsonl" → ".refined.jsonl" / ".random-drop.jsonl"
};

/// Where `knprobe run --drop-generic` writes the refined results.
std::string refined_path(const RunArgs& a) {
  if (!a.refined_out.empty()) return a.refined_out;
  const std::string ext = ".jsonl", what = a.random_drop ? ".random-drop" : ".refined";
  if (a.out.size() > ext.size() && a.out.ends_with(ext))
    return a.out.substr(0, a.out.size() - ext.size()) + what + ".jsonl";
  return a.out + what;
}

void mpi_barrier([[maybe_unused]] int size) {
#ifdef KNPROBE_HAS_MPI
  if (size > 1) MPI_Barrier(MPI_COMM_WORLD);
#endif
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

std::string part_name(const std::string& out, int rank, int size) {
  return out + ".part-" + std::to_string(rank) + "-of-" + std::to_string(size);
}

int run(const RunArgs& a, int rank, int size) {
  a.facts.validate();
  a.attribution.validate();
  if (a.dkn) a.dkn_args.validate();
  RunOptions o;
  o.localize.languages = a.facts.langs;
  o.localize.thresholds = a.thresholds.resolve(a.facts.langs);
  o.localize.attribution = a.attribution.options();
  o.localize.verify = !a.no_verify;
  o.localize.seed = a.facts.seed;
  a.controls.apply(o.localize);
  KNPROBE_REQUIRE(
      a.facts.per_relation == 0 && a.facts.per_answer == 0, UsageError,
      "run screens each fact as it goes: balance the facts first with `knprobe "
      "localize --screen ... --per-relation N --screen-only` and run on the facts.jsonl "
      "it writes");
  o.require_correct = a.facts.screening();
  o.screen = a.facts.screen_rule();
  o.max_answer_tokens = a.facts.max_answer_tokens;
  if (a.dkn) o.dkn = a.dkn_args.options();
  o.top_per_layer = a.top_per_layer;
  o.shard_rank = static_cast<std::size_t>(rank);
  o.shard_count = static_cast<std::size_t>(size);
  o.stop = &g_stop;
  const fs::path out(a.out);
  // Before any work: the outputs must be files we may write (not a folder, FIFO or device).
  io::require_file_target(out, "results file");
  if (size > 1) io::require_file_target(part_name(a.out, rank, size), "results file");
  KNPROBE_REQUIRE(!a.random_drop || a.drop_generic > 0, UsageError,
                  "--random-drop is the control of --drop-generic F: give F too");
  const fs::path refined = refined_path(a);
  if (a.drop_generic > 0) {
    io::require_file_target(refined, "refined results file");
    if (size > 1) io::require_file_target(part_name(refined.string(), rank, size), "results file");
    KNPROBE_REQUIRE(fs::weakly_canonical(refined) != fs::weakly_canonical(out), UsageError,
                    "--refined-out must differ from --out");
    if (refined.has_parent_path()) io::create_output_folder(refined.parent_path());
  }
  if (out.has_parent_path()) io::create_output_folder(out.parent_path());
  std::vector<FactProblem> problems;
  std::vector<Fact> facts = read_fact_args(a.facts, problems);
  const std::string hash = model_hash(a.model);
  return with_model(a.model, [&](const auto& model, const Tokenizer& tok) {
    a.attribution.check_layers(model.num_layers());
    KnowledgeProbe probe(model, tok);
    probe.set_max_tokens(a.attribution.max_tokens);
    FactArgs sel = a.facts;  // sampling and --limit only: screening is per fact, in the run
    sel.require_correct = false;
    sel.screen.clear();
    std::vector<SkippedFact> unused;
    prepare_facts(sel, probe, tok, facts, unused);
    // The header: what makes results comparable (paths are informative, not identity).
    nlohmann::json opt = a.attribution.to_json();
    opt.erase("max_tokens");  // a limit, not a parameter of the results
    opt["languages"] = a.facts.langs;
    opt["thresholds"] = o.localize.thresholds;
    opt["verify"] = !a.no_verify;
    opt["seed"] = a.facts.seed;
    opt["controls"] = a.controls.to_json();
    opt["require_correct"] = a.facts.screening();
    if (a.facts.screening()) opt["screen"] = a.facts.screen_rule().describe();
    opt["max_answer_tokens"] = a.facts.max_answer_tokens;
    opt["top_per_layer"] = a.top_per_layer;
    opt["dkn"] = a.dkn ? a.dkn_args.to_json() : nlohmann::json(nullptr);
    if (!a.facts.mlama.empty())
      opt["mlama"] = {
          {"relations", a.facts.relations}, {"sample", a.facts.sample}, {"limit", a.facts.limit}};
    nlohmann::json header = make_run_header(
        model, hash, facts, opt,
        {{"model", a.model.model}, {"facts", a.facts.facts}, {"mlama", a.facts.mlama}});
    // One pass (the run, or its refinement) over this rank's shard into `target` (canonical:
    // `final_out`), then rank 0 merges the shards; k_ok, or k_interrupted when any rank stopped.
    auto pass = [&](const fs::path& final_out, const nlohmann::json& head, auto&& work) {
      const fs::path target =
          size > 1 ? fs::path(part_name(final_out.string(), rank, size)) : final_out;
      RunSummary s;
      nlohmann::json part_header = head;
      if (size > 1) part_header["shard"] = {{"rank", rank}, {"count", size}};
      {
        // The file stays open (and locked) until the canonical file is written, so that a
        // second run on the same output cannot slip in between.
        io::ResultsFile file(target, part_header, run_header_informative_keys());
        announce_opened(file);
        const auto t0 = std::chrono::steady_clock::now();
        std::size_t first = SIZE_MAX;
        o.progress = [&](std::size_t done, std::size_t total, const std::string& what) {
          if (first == SIZE_MAX) first = done;
          const double el =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          const std::size_t now = done - first;
          const double rate = el > 0 ? static_cast<double>(now) / el : 0.0;
          std::fprintf(stderr, "\r%s[%zu/%zu] %-36.36s %.2f items/s, ETA %.0fs   ",
                       size > 1 ? ("rank " + std::to_string(rank) + " ").c_str() : "", done + 1,
                       total, what.c_str(), rate,
                       rate > 0 ? static_cast<double>(total - done) / rate : 0.0);
          std::fflush(stderr);
        };
        s = work(file);
        std::fprintf(stderr, "\n");
        std::printf("%s%s: %zu items, %zu already done, %zu computed (%zu failures)%s\n",
                    size > 1 ? ("rank " + std::to_string(rank) + ": ").c_str() : "", target.c_str(),
                    s.items, s.resumed, s.computed, s.failed, s.stopped ? ", interrupted" : "");
        if (!mpi_all(size, !s.stopped)) {
          std::printf("interrupted: rerun the same command to resume\n");
          return k_interrupted;
        }
        mpi_barrier(size);
        if (rank == 0) {  // one canonical file: fact order, language order, LIKN last
          std::vector<io::ResultsContent> parts;
          for (int r = 0; r < size; ++r) {
            const std::string p =
                size == 1 ? final_out.string() : part_name(final_out.string(), r, size);
            parts.push_back(io::read_results(p));
            detail::validate_run_records(parts.back(), p, &facts);
          }
          auto merged_header = parts[0].header;
          merged_header.erase("shard");
          const auto recs = canonical_records(parts);
          io::write_results_atomic(final_out, merged_header, recs);
          std::size_t failures = 0, screened = 0;
          for (const auto& r : parse_run_records(merged_header, recs, final_out.string(), &facts)) {
            failures += r.kind == RunRecordKind::failure;
            screened += r.kind == RunRecordKind::screened_out;
          }
          std::printf("wrote %s: %zu records (%zu screened out, %zu failures)\n", final_out.c_str(),
                      recs.size(), screened, failures);
        }
      }
      mpi_barrier(size);  // the canonical file exists for every rank
      return k_ok;
    };
    if (const int rc =
            pass(out, header, [&](io::ResultsFile& f) { return run_dataset(probe, facts, f, o); });
        rc != k_ok || a.drop_generic == 0)
      return rc;
    // Dai's refinement of the finished run (docs/METHOD.md §10), from its canonical file.
    const io::ResultsContent finished = io::read_results(out);
    const RefineRule rule = a.random_drop ? RefineRule::random_drop : RefineRule::generic;
    std::printf("%s (--drop-generic %g)\n",
                a.random_drop ? "random-drop control of the refinement"
                              : "refining against generic neurons",
                a.drop_generic);
    return pass(refined,
                refined_run_header(finished.header, finished.records, a.drop_generic, rule),
                [&](io::ResultsFile& f) {
                  return refine_run(probe, facts, finished, a.drop_generic, f, o, rule);
                });
  });
}

}  // namespace

Command add_run(CLI::App& app, int rank, int size) {
  auto args = std::make_shared<RunArgs>();
  auto* c = app.add_subcommand(
      "run", "localize a dataset into a resumable JSON Lines results file (shards under mpirun)");
  args->model.add(c);
  args->facts.add(c);
  args->attribution.add(c);
  args->thresholds.add(c);
  args->controls.add(c, /*offer_bootstrap=*/false);  // intervals: `knprobe report`
  args->dkn_args.add(c);
  c->add_option("--out", args->out, "results file (JSON Lines; resumed when it exists)")
      ->required();
  c->add_flag("--no-verify", args->no_verify, "skip the suppress/enhance checks");
  c->add_flag("--dkn", args->dkn, "also search degenerate neurons of every (fact, language)");
  c->add_option("--drop-generic", args->drop_generic,
                "Dai's refinement, once the run is complete: drop from a fact's set the neurons "
                "selected for more than this share of the facts of other relations, verify the "
                "reduced sets and LIKN again, and write them to --refined-out (0 = off, the "
                "default; resumable like the run)")
      ->check(number_in(0, 1, false, true));
  c->add_flag(
      "--random-drop", args->random_drop,
      "with --drop-generic: its size-matched control — drop as many neurons drawn at random "
      "from each set's non-generic ones (default file <out> with .jsonl → "
      ".random-drop.jsonl)");
  c->add_option("--refined-out", args->refined_out,
                "results file of --drop-generic (default: <out> with .jsonl → .refined.jsonl)");
  c->add_option("--top-per-layer", args->top_per_layer,
                "per-layer top units kept in each record for heatmaps (default 8)")
      ->check(integer_in(0, 4096));
  return {c, [args, rank, size] { return run(*args, rank, size); }};
}

}  // namespace knprobe::cli
