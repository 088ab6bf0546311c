// Language-independent knowledge neurons (LIKN): the neurons a fact shares across languages are
// the intersection of its per-language sets. stories260K knows one language, so this example uses
// two *phrasings* of the same fact as the two "languages"; with a multilingual model (Gemma 3,
// mGPT, mBERT) the same code takes an English and a Chinese prompt (see `knprobe localize
// --langs en,zh`).
//   example_likn_two_languages [path/to/stories260K]   (default: tests/data/models/stories260K)
#include <cstdio>
#include <filesystem>

#include "knprobe/model/llama.hpp"
#include "knprobe/probe/knowledge_probe.hpp"
#include "knprobe/tokenize/llama2c_tokenizer.hpp"

using namespace knprobe;

int main(int argc, char** argv) {
  const std::filesystem::path dir = argc > 1 ? argv[1] : "tests/data/models/stories260K";
  try {
    const auto model = LlamaModel<float>::load(dir / "stories260K.bin");
    const Llama2cTokenizer tok(dir / "tok512.bin", model.vocab_size());
    const KnowledgeProbe probe(model, tok);
    const std::vector<std::pair<std::string, std::string>> versions{
        {"a", "Once upon a time, there was a little girl named"}, {"b", "There was a girl named"}};
    std::vector<NeuronSet> sets;
    for (const auto& [lang, prompt] : versions) {
      const auto fact = probe.encode(prompt, " Lily");
      sets.push_back(probe.select(probe.attribute(fact), 0.2).neurons);  // t = 0.2 of the max
      std::printf("[%s] %zu neurons\n", lang.c_str(), sets.back().size());
    }
    const NeuronSet shared = likn(sets);  // = sets[0] & sets[1]
    std::printf("LIKN (in both): %zu:", shared.size());
    for (const auto& n : shared) std::printf(" L%d.%d", n.layer, n.unit);
    std::printf("\n");
    // Suppressing only the shared neurons, measured in each version.
    for (const auto& [lang, prompt] : versions) {
      const auto e = probe.effect(probe.encode(prompt, " Lily"), shared, 0.0);
      std::printf("[%s] P(Lily) %.3f -> %.3f with the LIKN suppressed\n", lang.c_str(), e.before,
                  e.after);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
