// The measurements of the editing experiment (experiments/editing.hpp) on the quantized GGUF model
// the CLI uses, for every (fact, language) of a facts file: P(old), P(new) and K unrelated facts'
// P, clean and with a set suppressed — one model call per (prompt, pattern), the baseline (what
// `knprobe edit` did before), against one batched `answer_probabilities` call (what it does
// now). Same process, same requests; checks that both give the same probabilities to 1e-4.
//   bench_editing GEMMA.gguf FACTS.jsonl [K=10] [reps=2] [--json FILE]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "knprobe/data/facts.hpp"
#include "knprobe/experiments/localize.hpp"
#include "knprobe/io/gguf.hpp"
#include "knprobe/model/llama.hpp"
#include "knprobe/tokenize/sentencepiece_bpe.hpp"
#include "timing.hpp"

using namespace knprobe;

int main(int argc, char** argv) {
  const std::string json_file = bench::take_json_option(argc, argv);
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s GEMMA.gguf FACTS.jsonl [K=10] [reps=2]\n", argv[0]);
    return 2;
  }
  const auto file = std::make_shared<const io::GgufFile>(argv[1]);
  const QuantizedLlamaModel m(load_llama_gguf_quantized(file));
  const SentencePieceBpe tok = SentencePieceBpe::from_gguf(*file);
  const KnowledgeProbe probe(m, tok);
  const auto facts = read_facts(argv[2]).facts;
  const int k = argc > 3 ? std::stoi(argv[3]) : 10;
  const int reps = argc > 4 ? std::stoi(argv[4]) : 2;
  // A suppressed set like a fact's selection: 16 units spread over the upper layers.
  std::vector<Neuron> units;
  for (int i = 0; i < 16; ++i)
    units.push_back({m.num_layers() / 2 + i % (m.num_layers() / 2), (i * 97) % m.ffn_width()});
  const NeuronSet set(units);
  // Per (fact, language): old and new answer, K unrelated facts, each clean and suppressed — the
  // requests of one fact's clean pass and suppression batch in the editing experiment.
  std::vector<std::vector<EncodedFact>> groups;
  for (std::size_t i = 0; i < facts.size(); ++i)
    for (const auto& [lang, prompt] : facts[i].prompts) {
      if (!facts[i].answers.count(lang)) continue;
      std::vector<EncodedFact> g{probe.encode(prompt, facts[i].answers.at(lang))};
      for (std::size_t j = 1; j < facts.size() && static_cast<int>(g.size()) < k + 2; ++j) {
        const Fact& o = facts[(i + j) % facts.size()];
        if (o.prompts.count(lang) && o.answers.count(lang))
          g.push_back(probe.encode(o.prompts.at(lang), o.answers.at(lang)));
      }
      groups.push_back(std::move(g));
    }
  std::size_t requests = 0;
  std::vector<std::vector<double>> one(groups.size()), batched(groups.size());
  const double t_one = bench::best_seconds(reps, [&] {
    requests = 0;
    for (std::size_t g = 0; g < groups.size(); ++g) {
      one[g].clear();
      for (const auto& f : groups[g]) {
        one[g].push_back(detail::answer_probability(m, f));
        one[g].push_back(detail::answer_probability(m, f, suppress(set, f.positions)));
        requests += 2;
      }
    }
  });
  const double t_batched = bench::best_seconds(reps, [&] {
    for (std::size_t g = 0; g < groups.size(); ++g) {
      std::vector<detail::PatternRequest> rq;
      for (const auto& f : groups[g])
        rq.push_back({&f, {InterventionPattern{}, suppress(set, f.positions)}});
      batched[g].clear();
      for (const auto& p : detail::answer_probabilities(m, rq))
        batched[g].insert(batched[g].end(), p.begin(), p.end());
    }
  });
  double worst = 0;
  for (std::size_t g = 0; g < groups.size(); ++g)
    for (std::size_t i = 0; i < one[g].size(); ++i)
      if (one[g][i] > 1e-6)
        worst = std::max(worst, std::abs(batched[g][i] - one[g][i]) / one[g][i]);
  std::printf(
      "%zu (fact, language) groups of up to %d prompts (the fact, one for its new answer, "
      "K = %d unrelated), each clean and with 16 units suppressed: %zu probabilities, %d "
      "threads\n",
      groups.size(), k + 2, k, requests, detail::max_threads());
  std::printf("one model call per (prompt, pattern): %.3f s\n", t_one);
  std::printf("one batched call per group:           %.3f s\n", t_batched);
  std::printf("speed-up %.2fx; largest relative difference %.2e (P > 1e-6)\n", t_one / t_batched,
              worst);
  bench::write_json(json_file, {{"groups", groups.size()},
                                {"probabilities", requests},
                                {"threads", detail::max_threads()},
                                {"one_call_seconds", t_one},
                                {"batched_seconds", t_batched},
                                {"speedup", t_one / t_batched},
                                {"max_relative_difference", worst}});
  return worst <= 1e-4 ? 0 : 1;
}
