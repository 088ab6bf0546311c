// Attribution throughput (prompts/s, m = 20, all layers) of KnowledgeProbe on a real model.
//   bench_attribution MODEL [prompts=3]      (.gguf, or stories260K .bin with tok512.bin beside it)
#include <chrono>
#include <cstdio>
#include <string>

#include "knprobe/model/llama.hpp"
#include "knprobe/probe/knowledge_probe.hpp"
#include "knprobe/tokenize/llama2c_tokenizer.hpp"
#include "knprobe/tokenize/sentencepiece_bpe.hpp"

using namespace knprobe;
using Clock = std::chrono::steady_clock;

template <class Tok>
int run(const LlamaModel<float>& m, const Tok& tok, int n,
        const std::vector<std::pair<std::string, std::string>>& facts) {
  const KnowledgeProbe probe(m, tok);
  for (Method method : {Method::ig, Method::amig}) {
    AttributionOptions o;
    o.method = method;
    o.steps = 20;
    const auto t0 = Clock::now();
    for (int i = 0; i < n; ++i) {
      const auto& [p, a] = facts[static_cast<std::size_t>(i) % facts.size()];
      (void)probe.attribute(p, a, o);
    }
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf("%s m=20 all layers: %d prompts in %.2f s = %.3f prompts/s\n",
                method == Method::ig ? "IG  " : "AMIG", n, s, n / s);
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL [prompts]\n", argv[0]);
    return 2;
  }
  const std::string path = argv[1];
  const int n = argc > 2 ? std::stoi(argv[2]) : 3;
  if (path.size() > 5 && path.substr(path.size() - 5) == ".gguf") {
    io::GgufFile f(path);
    const LlamaModel<float> m(load_llama_gguf(f));
    return run(m, SentencePieceBpe::from_gguf(f), n,
               {{"The capital of France is the city of", " Paris"},
                {"日本的首都是东京。法国的首都是", "巴黎"},
                {"The official language of Brazil is", " Portuguese"}});
  }
  const auto m = LlamaModel<float>::load(path);
  const Llama2cTokenizer tok(std::filesystem::path(path).parent_path() / "tok512.bin",
                             m.vocab_size());
  return run(m, tok, n,
             {{"Once upon a time, there was a little girl named", " Lily"},
              {"One day, Lily went to the", " park"},
              {"She saw a big", " dog"}});
}
