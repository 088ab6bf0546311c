// Degenerate knowledge neurons (DKN): sets of neurons that each store the same fact, so that
// suppressing any one is harmless but suppressing all of them is not. The search takes the 20
// strongest attributed neurons and tests pairs (and larger sets, apriori-style) with batched
// suppressed forward passes:
//   harmless(S) ⇔ p(S) ≥ (1 − 0.2) p₀,   harmful(S) ⇔ p(S) < (1 − 0.25) p₀.
//   example_dkn_search [path/to/stories260K]   (default: tests/data/models/stories260K)
#include <cstdio>
#include <filesystem>

#include "knprobe/model/llama.hpp"
#include "knprobe/probe/degenerate.hpp"
#include "knprobe/probe/knowledge_probe.hpp"
#include "knprobe/tokenize/llama2c_tokenizer.hpp"

using namespace knprobe;

int main(int argc, char** argv) {
  const std::filesystem::path dir = argc > 1 ? argv[1] : "tests/data/models/stories260K";
  try {
    const auto model = LlamaModel<float>::load(dir / "stories260K.bin");
    const Llama2cTokenizer tok(dir / "tok512.bin", model.vocab_size());
    const KnowledgeProbe probe(model, tok);
    const auto fact = probe.encode("Once upon a time, there was a little girl named", " Lily");
    const auto attribution = probe.attribute(fact);

    // The candidates: the fact's knowledge neurons (attribution ≥ 0.2 · max), strongest first.
    const auto selection = probe.select(attribution, 0.2);
    DknOptions o;        // the paper's settings: at most 20 candidates, T_low 0.2, T_high 0.25 ...
    o.max_set_size = 3;  // ... plus triples, within a forward-pass budget
    o.max_forward_passes = 5000;
    const DknResult r = find_degenerate(model, fact, attribution, o, &selection.ranked);
    std::printf("P(Lily) = %.3f; %zu degenerate sets in %zu suppressed passes%s\n", r.p0,
                r.degenerate.size(), r.forward_passes, r.truncated ? " (budget reached)" : "");
    for (const auto& set : r.degenerate) {
      std::printf("  {");
      for (std::size_t i = 0; i < set.size(); ++i)
        std::printf("%sL%d.%d", i ? ", " : "", set[i].layer, set[i].unit);
      const auto together = probe.effect(fact, NeuronSet(set), 0.0);
      std::printf("}: together %+.0f%%, alone:", 100 * together.relative());
      for (const auto& n : set)
        std::printf(" %+.0f%%", 100 * probe.effect(fact, NeuronSet{n}, 0.0).relative());
      std::printf("\n");
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
