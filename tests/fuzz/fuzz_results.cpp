// libFuzzer target: a results file made of fuzz bytes is read, validated against its own header,
// merged into canonical order and rendered as a report — or raises knprobe::Error. Never a crash,
// a raw library exception or unbounded memory.
#include <cstddef>
#include <cstdint>

#include "fuzz_support.hpp"
#include "knprobe/experiments/run.hpp"
#include "knprobe/report/report.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto p = knprobe::fuzz::scratch() / "r.jsonl";
  knprobe::fuzz::put(p, std::string(reinterpret_cast<const char*>(data), size));
  try {
    const auto c = knprobe::io::read_results(p);
    knprobe::detail::validate_run_records(c, p.string());
    (void)knprobe::canonical_records({c});
    knprobe::ReportInput in;
    in.runs.push_back({p.string(), c.header, c.records});
    const auto rep = knprobe::build_report(in);
    (void)knprobe::render_html(rep);
    (void)knprobe::render_markdown(rep);
  } catch (const knprobe::Error&) {
  }
  return 0;
}
