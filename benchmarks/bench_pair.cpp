// One (fact, language) pair of the main job, stage by stage: where the time of `knprobe localize`
// goes. Runs the library's own steps in localize()'s order on the quantized GGUF model the CLI
// uses — teacher-forced top-1 check, attribution (trace, AMIG baselines, all layers' gradients),
// selection, P(answer), the set's verification (effects, random and magnitude controls, K
// unrelated facts: one batched call) and the LIKN set's verification — and prints the seconds of
// each, their sum, and the same verification with one model call per request (the unbatched
// baseline, same process).
//   bench_pair GEMMA.gguf FACTS.jsonl [fact index=0] [language=en] [reps=2] [steps=20]
//              [quadrature=left|trapezoid|gauss] [--json FILE]
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "knprobe/data/facts.hpp"
#include "knprobe/experiments/localize.hpp"
#include "knprobe/io/gguf.hpp"
#include "knprobe/model/llama.hpp"
#include "knprobe/tokenize/sentencepiece_bpe.hpp"
#include "timing.hpp"

using namespace knprobe;
using bench::best_seconds;

int main(int argc, char** argv) {
  const std::string json_file = bench::take_json_option(argc, argv);
  if (argc < 3) {
    std::fprintf(
        stderr,
        "usage: %s GEMMA.gguf FACTS.jsonl [fact index] [language] [reps] [steps] [quadrature]\n",
        argv[0]);
    return 2;
  }
  const auto file = std::make_shared<const io::GgufFile>(argv[1]);
  const QuantizedLlamaModel m(load_llama_gguf_quantized(file));
  const SentencePieceBpe tok = SentencePieceBpe::from_gguf(*file);
  const KnowledgeProbe probe(m, tok);
  const auto facts = read_facts(argv[2]).facts;
  const std::size_t i = argc > 3 ? std::stoul(argv[3]) : 0;
  const std::string lang = argc > 4 ? argv[4] : "en";
  const int reps = argc > 5 ? std::stoi(argv[5]) : 2;
  const Fact& fact = facts.at(i);
  LocalizeOptions o;  // the main job's options
  o.attribution.method = Method::amig;
  o.attribution.steps = argc > 6 ? std::stoi(argv[6]) : 20;
  const std::string rule = argc > 7 ? argv[7] : "left";
  if (rule != "left" && rule != "trapezoid" && rule != "gauss") {
    std::fprintf(stderr, "bench_pair: quadrature '%s': expected left, trapezoid or gauss\n",
                 rule.c_str());
    return 2;
  }
  o.attribution.quadrature = rule == "gauss"       ? Quadrature::gauss_legendre
                             : rule == "trapezoid" ? Quadrature::trapezoid
                                                   : Quadrature::left_riemann;
  const double threshold = lang == "zh" ? 0.2 : 0.3;
  const EncodedFact f = probe.encode(fact.prompts.at(lang), fact.answers.at(lang));
  std::printf("fact %s [%s]: %zu tokens, %zu answer token(s); %d threads; AMIG m %d, %s rule\n",
              fact.id.c_str(), lang.c_str(), f.tokens.size(), f.targets.size(),
              detail::max_threads(), o.attribution.steps, rule.c_str());

  struct Stage {
    const char* name;
    double seconds;
  };
  std::vector<Stage> st;
  st.push_back({"top-1 check (trace + logits)",
                best_seconds(reps, [&] { (void)detail::answers_top1(m, f); })});
  st.push_back({"attribution: trace", best_seconds(reps, [&] { (void)m.trace(f.tokens); })});
  st.push_back({"attribution: AMIG baselines", best_seconds(reps, [&] {
                  (void)detail::amig_baselines(m, f, probe.baseline_token());
                })});
  Attribution a;
  const double t_attr = best_seconds(reps, [&] { a = probe.attribute(f, o.attribution); });
  st.push_back({"attribution: layer gradients (rest)", t_attr - st[1].seconds - st[2].seconds});
  Selection s;
  st.push_back({"selection", best_seconds(reps, [&] { s = probe.select(a, threshold); })});
  st.push_back({"P(answer)", best_seconds(reps, [&] { (void)detail::answer_probability(m, f); })});
  const double t_verify = best_seconds(
      reps, [&] { (void)detail::measure_set(probe, facts, i, lang, f, s.neurons, o); });
  st.push_back({"verification of the set (batched)", t_verify});
  st.push_back({"verification of the LIKN set (same cost)", t_verify});
  double total = 0;
  for (const auto& x : st) total += x.seconds;
  std::printf("%-42s %9s %7s\n", "stage", "seconds", "share");
  for (const auto& x : st)
    std::printf("%-42s %9.3f %6.1f%%\n", x.name, x.seconds, 100 * x.seconds / total);
  std::printf("%-42s %9.3f\n", "one (fact, language) pair", total);
  nlohmann::json out = {{"fact", fact.id},
                        {"language", lang},
                        {"tokens", f.tokens.size()},
                        {"answer_tokens", f.targets.size()},
                        {"threads", detail::max_threads()},
                        {"steps", o.attribution.steps},
                        {"quadrature", rule},
                        {"pair_seconds", total}};
  for (const auto& x : st) out["stages"].push_back({{"stage", x.name}, {"seconds", x.seconds}});

  // The unbatched verification of the same set: one model call per request.
  static constexpr double factors[] = {0.0, 2.0};
  const double t_single = best_seconds(reps, [&] {
    const std::uint64_t cs = o.seed ^ detail::fnv1a(fact.id + '\x1f' + lang + "\x1f" + "control");
    (void)probe.effects(f, s.neurons, factors);
    (void)probe.effects(f, probe.random_control(s.neurons, cs), factors);
    (void)probe.effects(f, probe.magnitude_control(s.neurons, f, cs, o.control_band), factors);
    for (const auto& [id, g] : detail::unrelated_facts(probe, facts, i, lang, o.unrelated, o.seed))
      (void)probe.effects(g, s.neurons, factors);
  });
  std::printf("verification of the set, one call per request: %.3f s (batched: %.2fx faster)\n",
              t_single, t_single / t_verify);
  out["verification_per_call_seconds"] = t_single;
  out["verification_batched_seconds"] = t_verify;
  bench::write_json(json_file, out);
  return 0;
}
