// Screening by rank (`--screen rank:K`, `top1`) on the quantized GGUF model the CLI uses: the
// answer tokens' ranks from the logits of every position (the baseline: the output head on all
// T rows, then the answer rows picked) against the logits of the answer positions only
// (`logits(trace, positions)`, what screening runs now), same process, same facts, every
// language of each fact; checks that both give the same ranks.
//   bench_screening GEMMA.gguf FACTS.jsonl [reps=2] [--json FILE]
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

namespace {

/// Rank (1 = argmax) of each answer token in the rows of `z` (row t: answer token t).
std::vector<int> ranks_of(const MatrixF& z, const EncodedFact& f) {
  std::vector<int> r;
  for (std::size_t t = 0; t < f.targets.size(); ++t) {
    const auto row = z.row(Index(t));
    int above = 0;
    for (Index v = 0; v < row.size(); ++v) above += row(v) > row(f.targets[t]);
    r.push_back(above + 1);
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string json_file = bench::take_json_option(argc, argv);
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s GEMMA.gguf FACTS.jsonl [reps]\n", argv[0]);
    return 2;
  }
  const auto file = std::make_shared<const io::GgufFile>(argv[1]);
  const QuantizedLlamaModel m(load_llama_gguf_quantized(file));
  const SentencePieceBpe tok = SentencePieceBpe::from_gguf(*file);
  const KnowledgeProbe probe(m, tok);
  const int reps = argc > 3 ? std::stoi(argv[3]) : 2;
  std::vector<EncodedFact> items;
  std::size_t tokens = 0;
  for (const auto& fact : read_facts(argv[2]).facts)
    for (const auto& [lang, prompt] : fact.prompts)
      if (fact.answers.count(lang)) {
        items.push_back(probe.encode(prompt, fact.answers.at(lang)));
        tokens += items.back().tokens.size();
      }
  std::vector<std::vector<int>> full(items.size()), rows(items.size());
  const double t_full = bench::best_seconds(reps, [&] {
    for (std::size_t i = 0; i < items.size(); ++i) {
      const auto& f = items[i];
      const MatrixF all = m.logits(m.trace(f.tokens));
      MatrixF z(Index(f.positions.size()), all.cols());
      for (std::size_t t = 0; t < f.positions.size(); ++t)
        z.row(Index(t)) = all.row(f.positions[t]);
      full[i] = ranks_of(z, f);
    }
  });
  const double t_rows = bench::best_seconds(reps, [&] {
    for (std::size_t i = 0; i < items.size(); ++i)
      rows[i] = ranks_of(detail::answer_logits(m, items[i]), items[i]);
  });
  std::size_t same = 0;
  for (std::size_t i = 0; i < items.size(); ++i) same += full[i] == rows[i];
  std::printf("%zu (fact, language) items, %zu tokens, %d threads\n", items.size(), tokens,
              detail::max_threads());
  std::printf("ranks from the logits of every position: %.3f s\n", t_full);
  std::printf("ranks from the answer positions' logits: %.3f s\n", t_rows);
  std::printf("speed-up %.2fx; identical ranks in %zu of %zu items\n", t_full / t_rows, same,
              items.size());
  bench::write_json(json_file, {{"items", items.size()},
                                {"tokens", tokens},
                                {"threads", detail::max_threads()},
                                {"all_positions_seconds", t_full},
                                {"answer_positions_seconds", t_rows},
                                {"speedup", t_full / t_rows},
                                {"identical_ranks", same}});
  return same == items.size() ? 0 : 1;
}
