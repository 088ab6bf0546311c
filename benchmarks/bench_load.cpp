// Load time of a GGUF model against one forward pass over a prompt, in the same process:
// GGUF parse (mmap + metadata + tensor table), tokenizer, weights (dequantization to float),
// then `trace` + next-token distribution of a short prompt (the first and a repeated one).
//   bench_load MODEL.gguf ["prompt"]
#include <chrono>
#include <cstdio>
#include <string>

#include "knprobe/model/llama.hpp"
#include "knprobe/tokenize/sentencepiece_bpe.hpp"

using namespace knprobe;
using Clock = std::chrono::steady_clock;

namespace {
double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}
}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL.gguf [prompt]\n", argv[0]);
    return 2;
  }
  const std::string prompt = argc > 2 ? argv[2] : "The capital of France is";
  auto t = Clock::now();
  const io::GgufFile f(argv[1]);
  const double parse = since(t);
  t = Clock::now();
  const auto tok = SentencePieceBpe::from_gguf(f);
  const double tokenizer = since(t);
  t = Clock::now();
  const LlamaModel<float> m(load_llama_gguf(f));
  const double weights = since(t);
  const auto ids = tok.encode(prompt);
  double forward[3];
  for (double& s : forward) {
    t = Clock::now();
    const auto tr = m.trace(ids);
    volatile float p = m.probability(tr, tr.num_tokens() - 1, 0);
    (void)p;
    s = since(t);
  }
  const double load = parse + tokenizer + weights;
  std::printf("parse %.3f s, tokenizer %.3f s, weights %.3f s: load %.3f s\n", parse, tokenizer,
              weights, load);
  std::printf("forward over %zu tokens: first %.3f s, then %.3f s, %.3f s\n", ids.size(),
              forward[0], forward[1], forward[2]);
  std::printf("load / forward = %.1f\n", load / forward[2]);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_load: %s\n", e.what());
  return 1;
}
