// Localize one fact: which FFN neurons of stories260K make it continue
// "Once upon a time, there was a little girl named" with " Lily"?
//   example_localize_one_fact [path/to/stories260K]   (default: tests/data/models/stories260K)
#include <cstdio>
#include <filesystem>

#include "knprobe/model/llama.hpp"
#include "knprobe/probe/knowledge_probe.hpp"
#include "knprobe/tokenize/llama2c_tokenizer.hpp"

int main(int argc, char** argv) {
  const std::filesystem::path dir = argc > 1 ? argv[1] : "tests/data/models/stories260K";
  try {
    // 1. A real model and its tokenizer.
    const auto model = knprobe::LlamaModel<float>::load(dir / "stories260K.bin");
    const knprobe::Llama2cTokenizer tokenizer(dir / "tok512.bin", model.vocab_size());
    knprobe::KnowledgeProbe probe(model, tokenizer);

    // 2. The fact: the prompt ends where the answer begins; the answer keeps its space.
    const auto fact = probe.encode("Once upon a time, there was a little girl named", " Lily");

    // 3. Attribution: AMIG baseline, Gauss-Legendre quadrature (20 gradient evaluations).
    knprobe::AttributionOptions opt;
    opt.method = knprobe::Method::amig;
    opt.quadrature = knprobe::Quadrature::gauss_legendre;
    opt.steps = 20;
    const auto attribution = probe.attribute(fact, opt);
    std::printf("largest completeness error: %.2e\n", attribution.max_delta());

    // 4. Selection: neurons scoring at least 30 percent of the best one.
    const auto selected = probe.select(attribution, 0.3);
    for (const auto& [neuron, score] : selected.ranked)
      std::printf("  layer %d unit %3d  score %.4f\n", neuron.layer, neuron.unit, score);

    // 5. Verification: suppress them, and a random set of the same layer histogram.
    const auto hit = probe.effect(fact, selected.neurons, 0.0);
    const auto ctl = probe.effect(fact, probe.random_control(selected.neurons, 7), 0.0);
    std::printf("P(Lily) %.3f -> %.3f when suppressed (random control: %.3f)\n", hit.before,
                hit.after, ctl.after);
  } catch (const knprobe::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
