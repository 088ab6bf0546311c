// Fact-checking's claims: the ≈ 6 candidate objects of one fact share its prompt. Attributes
// them one call each (the baseline: the code before attribute_shared) and in one
// attribute_shared call (one trace, one set of AMIG baselines, twin requests sharing the forward
// passes and the head's logits), on the quantized GGUF model the CLI uses, for a set of layers as
// a relation's DKN set spans; prints both times, their ratio, and the largest difference of any
// score (0: the results are bit-identical).
//   bench_claims GEMMA.gguf [layers=17|all|L,L,...] [reps=2] [steps=20] [--json FILE]
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "knprobe/io/gguf.hpp"
#include "knprobe/model/llama.hpp"
#include "knprobe/probe/knowledge_probe.hpp"
#include "knprobe/tokenize/sentencepiece_bpe.hpp"
#include "timing.hpp"

using namespace knprobe;
using bench::best_seconds;

int main(int argc, char** argv) {
  const std::string json_file = bench::take_json_option(argc, argv);
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s GEMMA.gguf [layers=17|all|L,L,...] [reps] [steps]\n", argv[0]);
    return 2;
  }
  const auto file = std::make_shared<const io::GgufFile>(argv[1]);
  const QuantizedLlamaModel m(load_llama_gguf_quantized(file));
  const SentencePieceBpe tok = SentencePieceBpe::from_gguf(*file);
  const KnowledgeProbe probe(m, tok);
  const std::string layers = argc > 2 ? argv[2] : "17";
  const int reps = argc > 3 ? std::stoi(argv[3]) : 2;
  AttributionOptions o;
  o.method = Method::amig;
  o.steps = argc > 4 ? std::stoi(argv[4]) : 20;
  if (layers != "all") {
    std::stringstream ss(layers);
    for (std::string x; std::getline(ss, x, ',');) o.layers.push_back(std::stoi(x));
  }
  const std::string prompt = "The capital of France is";
  std::vector<EncodedFact> claims;
  for (const char* obj : {" Paris", " London", " Berlin", " Rome", " Madrid", " Tokyo"})
    claims.push_back(probe.encode(prompt, obj));
  for (const auto& c : claims)
    if (c.tokens != claims[0].tokens) {
      std::fprintf(stderr, "bench_claims: a candidate is not a single token\n");
      return 1;
    }
  std::printf("%zu candidates of one prompt (%zu tokens); layers %s; AMIG m %d; %d threads\n",
              claims.size(), claims[0].tokens.size(), layers.c_str(), o.steps,
              detail::max_threads());
  std::vector<Attribution> one, shared;
  const double t_one = best_seconds(reps, [&] {
    one.clear();
    for (const auto& c : claims) one.push_back(probe.attribute(c, o));
  });
  const double t_shared = best_seconds(reps, [&] { shared = probe.attribute_shared(claims, o); });
  double diff = 0;
  for (std::size_t i = 0; i < claims.size(); ++i)
    for (std::size_t k = 0; k < one[i].scores.size(); ++k)
      diff = std::max(diff, std::abs(one[i].scores.flat(k) - shared[i].scores.flat(k)));
  std::printf("one call per candidate   %8.3f s\n", t_one);
  std::printf("attribute_shared         %8.3f s   (%.2fx)\n", t_shared, t_one / t_shared);
  std::printf("largest score difference %.3g\n", diff);
  bench::write_json(json_file, {{"candidates", claims.size()},
                                {"layers", layers},
                                {"steps", o.steps},
                                {"threads", detail::max_threads()},
                                {"one_call_each_s", t_one},
                                {"shared_s", t_shared},
                                {"speedup", t_one / t_shared},
                                {"max_score_difference", diff}});
  return 0;
}
