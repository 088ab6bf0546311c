// Load time of a GGUF model against one forward pass over a prompt, in the same process, for
// both weight storages: GGUF parse (mmap + metadata + tensor table), tokenizer, weights (kept in
// their ggml blocks — QuantizedLlamaModel — or dequantized to float32 — LlamaModel<float>), then
// `trace` + next-token probability of a short prompt (first call — it also faults the mapped
// weights in — and the best of three; load/fwd uses the best).
//   bench_load MODEL.gguf ["prompt"]
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "knprobe/model/llama.hpp"
#include "knprobe/tokenize/sentencepiece_bpe.hpp"

using namespace knprobe;
using Clock = std::chrono::steady_clock;

namespace {
double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

struct Timing {
  double load = 0, first = 0, forward = 0;
  VectorF logits;
};

/// Times the forward (best of three) and returns the logits at the last position.
template <class Model>
void time_forward(const Model& m, const std::vector<TokenId>& ids, Timing& out) {
  double best = 1e30;
  for (int i = 0; i < 3; ++i) {
    const auto t = Clock::now();
    const auto tr = m.trace(ids);
    volatile float p = m.probability(tr, tr.num_tokens() - 1, 0);
    (void)p;
    best = std::min(best, since(t));
    if (i == 0) out.first = since(t);
    if (i == 0) out.logits = m.logits(tr).row(tr.num_tokens() - 1).transpose();
  }
  out.forward = best;
}
}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL.gguf [prompt]\n", argv[0]);
    return 2;
  }
  const std::string prompt = argc > 2 ? argv[2] : "The capital of France is";
  auto t = Clock::now();
  const auto f = std::make_shared<const io::GgufFile>(argv[1]);
  const double parse = since(t);
  t = Clock::now();
  const auto tok = SentencePieceBpe::from_gguf(*f);
  const double tokenizer = since(t);
  const auto ids = tok.encode(prompt);

  Timing q, d;
  t = Clock::now();
  {
    const QuantizedLlamaModel m(load_llama_gguf_quantized(f));
    q.load = since(t);
    time_forward(m, ids, q);
  }
  t = Clock::now();
  {
    const LlamaModel<float> m(load_llama_gguf(*f));
    d.load = since(t);
    time_forward(m, ids, d);
  }
  const double base = parse + tokenizer;
  std::printf("parse %.3f s, tokenizer %.3f s\n", parse, tokenizer);
  std::printf("%-28s %9s %9s %9s %11s %9s\n", "weights", "weights s", "load s", "first fwd",
              "forward s", "load/fwd");
  std::printf("%-28s %9.3f %9.3f %9.3f %11.3f %9.2f\n", "quantized (QuantizedMatrix)", q.load,
              base + q.load, q.first, q.forward, (base + q.load) / q.forward);
  std::printf("%-28s %9.3f %9.3f %9.3f %11.3f %9.2f\n", "float32 (dequantized)", d.load,
              base + d.load, d.first, d.forward, (base + d.load) / d.forward);
  std::printf(
      "forward over %zu tokens; quantized / float32 forward time = %.2f; max |logit "
      "difference| = %.2e (of max |logit| %.2f)\n",
      ids.size(), q.forward / d.forward, (q.logits - d.logits).cwiseAbs().maxCoeff(),
      d.logits.cwiseAbs().maxCoeff());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_load: %s\n", e.what());
  return 1;
}
