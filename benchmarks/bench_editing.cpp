// The measurements of the editing experiment (experiments/editing.hpp) on the quantized GGUF model
// the CLI uses, for every (fact, language) of a facts file: P(old), P(new) and K unrelated facts'
// P, clean and with a set suppressed — one model call per (prompt, pattern), the baseline (what
// `knprobe edit` did before), against the batched `answer_probabilities` calls it makes now (the
// clean pass in one batch, the suppression in another). Same process, same requests, both warmed
// up; checks every probability (relative 1e-4; NaN fails).
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
  // Per (fact, language): the fact, another prompt (as for the new answer) and K unrelated facts,
  // clean and suppressed — the shape of one fact's clean and suppression batches in editing.
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
  auto per_call = [&] {
    requests = 0;
    for (std::size_t g = 0; g < groups.size(); ++g) {
      one[g].clear();
      for (const auto& f : groups[g]) one[g].push_back(detail::answer_probability(m, f));
      for (const auto& f : groups[g])
        one[g].push_back(detail::answer_probability(m, f, suppress(set, f.positions)));
      requests += 2 * groups[g].size();
    }
  };
  // As the experiment does: the clean pass of a group in one batch, the suppression in another.
  auto batched_calls = [&] {
    for (std::size_t g = 0; g < groups.size(); ++g) {
      batched[g].clear();
      for (const bool suppressed : {false, true}) {
        std::vector<detail::PatternRequest> rq;
        for (const auto& f : groups[g])
          rq.push_back({&f, {suppressed ? suppress(set, f.positions) : InterventionPattern{}}});
        for (const auto& p : detail::answer_probabilities(m, rq)) batched[g].push_back(p.at(0));
      }
    }
  };
  per_call();  // warm-up: the model's pages and the allocator, for both modes
  batched_calls();
  const double t_one = bench::best_seconds(reps, per_call);
  const double t_batched = bench::best_seconds(reps, batched_calls);
  // Every probability compared (NaN fails): relative 1e-4, or 1e-10 absolute for tiny ones.
  double worst = 0;
  std::size_t bad = 0;
  for (std::size_t g = 0; g < groups.size(); ++g) {
    bad += one[g].size() != batched[g].size();
    for (std::size_t i = 0; i < std::min(one[g].size(), batched[g].size()); ++i) {
      const double d = std::abs(batched[g][i] - one[g][i]);
      if (!(d <= 1e-4 * std::abs(one[g][i]) + 1e-10)) ++bad;
      if (one[g][i] > 1e-6) worst = std::max(worst, d / one[g][i]);
    }
  }
  std::printf(
      "%zu (fact, language) groups of up to %d prompts (the fact, one for its new answer, "
      "K = %d unrelated), each clean and with 16 units suppressed: %zu probabilities, %d "
      "threads\n",
      groups.size(), k + 2, k, requests, detail::max_threads());
  std::printf("one model call per (prompt, pattern): %.3f s\n", t_one);
  std::printf("two batched calls per group (clean, suppressed): %.3f s\n", t_batched);
  std::printf("speed-up %.2fx; largest relative difference %.2e (P > 1e-6); %zu mismatches\n",
              t_one / t_batched, worst, bad);
  bench::write_json(json_file, {{"groups", groups.size()},
                                {"probabilities", requests},
                                {"threads", detail::max_threads()},
                                {"one_call_seconds", t_one},
                                {"batched_seconds", t_batched},
                                {"speedup", t_one / t_batched},
                                {"max_relative_difference", worst},
                                {"mismatches", bad}});
  return bad == 0 ? 0 : 1;
}
