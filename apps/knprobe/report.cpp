// knprobe report: one self-contained HTML page (inline SVG figures, no script) and Markdown tables
// from results files of `knprobe run` (and a factcheck.json).
#include "knprobe/report/report.hpp"
#include "cli.hpp"
#include "knprobe/experiments/run.hpp"

namespace fs = std::filesystem;

namespace knprobe::cli {
namespace {

struct ReportArgs {
  std::vector<std::string> inputs;
  std::string factcheck, fact, out = "knprobe-report.html", markdown;
};

int run(const ReportArgs& a) {
  // Outputs are checked before the inputs are read: a folder or device is refused by name.
  io::require_file_target(a.out, "report file");
  if (!a.markdown.empty()) io::require_file_target(a.markdown, "Markdown file");
  std::vector<io::ResultsContent> runs;
  for (const auto& in : a.inputs) {
    runs.push_back(io::read_results(in));
    if (runs.back().repaired)
      std::fprintf(stderr, "knprobe: %s: %s\n", in.c_str(), runs.back().repaired->c_str());
  }
  ReportInput ri;
  for (std::size_t i = 0; i < runs.size(); ++i)
    ri.runs.push_back({a.inputs[i], runs[i].header, runs[i].records});
  if (!a.factcheck.empty()) {
    ri.factcheck = io::detail::read_json(a.factcheck);
    ri.factcheck_path = a.factcheck;
  }
  ri.fact = a.fact;
  const Report rep = build_report(ri);  // FormatError names the inputs on a malformed field
  const fs::path o(a.out);
  if (o.has_parent_path()) io::create_output_folder(o.parent_path());
  io::write_file_atomic(o, render_html(rep));
  std::printf("wrote %s\n", a.out.c_str());
  if (!a.markdown.empty()) {
    const fs::path md(a.markdown);
    if (md.has_parent_path()) io::create_output_folder(md.parent_path());
    io::write_file_atomic(md, render_markdown(rep));
    std::printf("wrote %s\n", a.markdown.c_str());
  }
  return k_ok;
}

}  // namespace

Command add_report(CLI::App& app) {
  auto args = std::make_shared<ReportArgs>();
  auto* c = app.add_subcommand(
      "report", "a self-contained HTML report (SVG figures) and Markdown tables of results files");
  c->add_option("results", args->inputs, "results files of `knprobe run`")
      ->required()
      ->check(CLI::ExistingFile);
  c->add_option("--factcheck", args->factcheck, "factcheck.json of `knprobe factcheck`")
      ->check(CLI::ExistingFile);
  c->add_option("--fact", args->fact, "fact id of the attribution heatmap (default: first)");
  c->add_option("--out", args->out, "HTML file to write (default knprobe-report.html)");
  c->add_option("--markdown", args->markdown, "also write the tables as Markdown to this file");
  return {c, [args] { return run(*args); }};
}

}  // namespace knprobe::cli
