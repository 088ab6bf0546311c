// libFuzzer target: the knprobe command line. The fuzz bytes, split at NUL, are the arguments of a
// subcommand carrying every shared option group (facts, attribution, thresholds, DKN). Parsing
// either refuses them (CLI::ParseError) or accepts them, and then the cross-option checks either
// raise UsageError or leave every value inside its documented range.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "cli.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace knprobe::cli;
  auto args = knprobe::fuzz::split(data, size, 16);
  while (!args.empty() && args.back().empty()) args.pop_back();
  CLI::App app;
  auto* c = app.add_subcommand("localize");
  FactArgs f;
  AttributionArgs a;
  ThresholdArgs t;
  DknArgs d;
  f.add(c);
  a.add(c);
  t.add(c);
  d.add(c);
  args.insert(args.begin(), "localize");
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError&) {
    return 0;
  }
  try {
    f.validate();
    a.validate();
    d.validate();
    const auto thresholds = t.resolve(f.langs);
    for (const auto& [lang, v] : thresholds)
      if (!(v > 0 && v <= 1)) std::abort();
  } catch (const knprobe::UsageError&) {
    return 0;
  }
  if (a.steps < 1 || a.steps > 1000 || a.max_tokens < 1) std::abort();
  for (int l : a.layers)
    if (l < 0 || l > 4095) std::abort();
  if (!(d.t_low >= 0 && d.t_low < 1 && d.t_high > 0 && d.t_high <= 1 && d.t_low <= d.t_high))
    std::abort();
  if (d.top < 2 || d.max_set_size < 2 || d.max_set_size > 8 || d.max_passes < 1) std::abort();
  if (f.max_answer_tokens < 0 || f.langs.empty()) std::abort();
  for (const auto& lang : f.langs)
    if (!knprobe::valid_language_code(lang)) std::abort();
  return 0;
}
