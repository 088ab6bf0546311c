// knprobe's side of benchmarks/compare_knowledge_neurons.py: IG attribution (all layers) of
// token-id prompts on a Hugging Face GPT-2 directory, in the reference's configuration
// (pre-activation `c_fc` site, linspace quadrature, paper_compat) and in knprobe's default one
// (post-activation site, left Riemann), timed, with the scores written for the parity check.
//   bench_kn_compare SPEC.json OUT.json
// SPEC: {"model": DIR, "steps": 20, "repeats": 1, "cases": [{"ids": [...], "target": t}, ...]}
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "knprobe/model/gpt2.hpp"
#include "knprobe/probe/attribution.hpp"

using namespace knprobe;
using Clock = std::chrono::steady_clock;

namespace {

template <class M>
nlohmann::json run(const M& m, const nlohmann::json& spec, bool reference_mode) {
  AttributionOptions o;
  o.method = Method::ig;
  o.steps = spec.value("steps", 20);
  o.quadrature = reference_mode ? Quadrature::linspace : Quadrature::left_riemann;
  o.paper_compat = reference_mode;
  const int repeats = spec.value("repeats", 1);
  nlohmann::json scores = nlohmann::json::array();
  const auto t0 = Clock::now();
  int prompts = 0;
  for (int r = 0; r < repeats; ++r)
    for (const auto& c : spec["cases"]) {
      EncodedFact f;
      f.tokens = c["ids"].get<std::vector<TokenId>>();
      f.positions = {static_cast<int>(f.tokens.size()) - 1};
      f.targets = {c["target"].get<TokenId>()};
      const auto a = attribute(m, f, o, 0);
      ++prompts;
      if (r == 0) {
        std::vector<std::vector<double>> s(a.scores.shape()[0]);
        for (std::size_t l = 0; l < s.size(); ++l)
          for (std::size_t i = 0; i < a.scores.shape()[1]; ++i) s[l].push_back(a.scores(l, i));
        scores.push_back(s);
      }
    }
  const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
  return {
      {"seconds", sec}, {"prompts", prompts}, {"prompts_per_s", prompts / sec}, {"scores", scores}};
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s SPEC.json OUT.json\n", argv[0]);
    return 2;
  }
  std::ifstream in(argv[1]);
  const auto spec = nlohmann::json::parse(in);
  const auto t0 = Clock::now();
  const auto pre =
      Gpt2Model<float, NeuronSite::pre_activation>::load(spec["model"].get<std::string>());
  const double load = std::chrono::duration<double>(Clock::now() - t0).count();
  const auto post = Gpt2Model<float>(pre.weights());
  nlohmann::json out{{"load_seconds", load},
                     {"reference_mode", run(pre, spec, true)},
                     {"default_mode", run(post, spec, false)}};
  std::ofstream(argv[2]) << out.dump();
  std::printf("knprobe: reference mode %.3f prompts/s, default mode %.3f prompts/s\n",
              out["reference_mode"]["prompts_per_s"].get<double>(),
              out["default_mode"]["prompts_per_s"].get<double>());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_kn_compare: %s\n", e.what());
  return 1;
}
