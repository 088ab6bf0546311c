// layer_gradients cost by start layer, and achieved GFLOP/s of the attribution-shaped workload
// against the sgemm peak of the same machine measured in the same run. For a .gguf file the batched
// workload is also run with the weights kept quantized (QuantizedLlamaModel) — time ratio and
// largest gradient difference against the dequantized float32 model.
//   bench_layer_gradients MODEL [points=22] [reps=3] [--json FILE]   (MODEL: .gguf or llama2.c
//   .bin)
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "knprobe/io/gguf.hpp"
#include "knprobe/model/llama.hpp"
#include "timing.hpp"

using namespace knprobe;
using bench::best_seconds;
using Clock = std::chrono::steady_clock;

namespace {
/// FLOPs of one layer_gradients call from `layer` (forward + backward GEMMs and the head).
double flops(const LlamaSpec& s, int layer, int B, int ctx) {
  const double d = s.hidden, q = double(s.heads) * s.head_dim, kv = double(s.kv_heads) * s.head_dim;
  const double per_layer = 2.0 * B * (d * (q + 2 * kv) + q * d + 3 * d * s.ffn) +
                           2.0 * B * 2 * ctx * q;  // projections + attention
  const double head = 2.0 * B * d * s.vocab_size;
  // backward ≈ forward (activation gradients only); layer l itself: down projection only.
  return 2.0 * ((s.layers - layer - 1) * per_layer + 2.0 * B * s.ffn * d + head);
}
}  // namespace

int main(int argc, char** argv) {
  const std::string json_file = bench::take_json_option(argc, argv);
  nlohmann::json out;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL [points] [reps] [--json FILE]\n", argv[0]);
    return 2;
  }
  const std::string path = argv[1];
  const int B = argc > 2 ? std::stoi(argv[2]) : 22, reps = argc > 3 ? std::stoi(argv[3]) : 3;
  const auto t0 = Clock::now();
  const LlamaModel<float> m = path.size() > 5 && path.substr(path.size() - 5) == ".gguf"
                                  ? LlamaModel<float>(load_llama_gguf(io::GgufFile(path)))
                                  : LlamaModel<float>::load(path);
  std::printf("model %s: load %.2f s\n", path.c_str(),
              std::chrono::duration<double>(Clock::now() - t0).count());
  // sgemm peak: a square product large enough to be compute bound.
  const int n = 1536;
  const MatrixF a = MatrixF::Random(n, n), b = MatrixF::Random(n, n);
  MatrixF c(n, n);
  const double tg = best_seconds(3, [&] { c.noalias() = a * b; });
  const double peak = 2.0 * n * n * double(n) / tg / 1e9;
  std::printf("sgemm %dx%dx%d: %.1f GFLOP/s (Eigen, %d threads)\n", n, n, n, peak,
              Eigen::nbThreads());
  out["threads"] = Eigen::nbThreads();
  out["eigen_sgemm"] = {{"shape", {n, n, n}}, {"gflops", peak}};
  // The output head's shape in the batched workload: (L·B rows) × vocabulary × hidden.
  {
    const int rows = m.num_layers() * B, k = m.hidden_size(), cols = m.vocab_size();
    const MatrixF x = MatrixF::Random(rows, k);
    MatrixF y(rows, cols);
    const MatrixF& e = m.weights().head();
    const double th = best_seconds(2, [&] { y.noalias() = x * e.transpose(); });
    const double g = 2.0 * rows * double(k) * cols / th / 1e9;
    std::printf("head product %dx%dx%d: %.1f GFLOP/s (Eigen)\n", rows, cols, k, g);
    out["eigen_head_gemm"] = {{"shape", {rows, cols, k}}, {"gflops", g}};
  }

  std::vector<TokenId> ids(12);
  for (int i = 0; i < 12; ++i) ids[i] = 100 + 37 * i;
  ids[0] = m.spec().bos.value_or(1);
  const auto tr = m.trace(ids);
  const int p = 11, L = m.num_layers();
  const double t_trace = best_seconds(reps, [&] { (void)m.trace(ids); });
  std::printf("trace of 12 tokens: %.3f s\n", t_trace);
  std::printf("%6s %10s %12s %10s %10s\n", "layer", "seconds", "ratio/l=0", "(L-l)/L", "GFLOP/s");
  double t0l = 0, total_t = 0, total_f = 0;
  for (int l = 0; l < L; l += std::max(1, L / 6)) {
    MatrixF pts = tr.acts[l].row(p).replicate(B, 1);
    const double t = best_seconds(reps, [&] { (void)m.layer_gradients(tr, l, p, pts, 42); });
    if (l == 0) t0l = t;
    const double f = flops(m.spec(), l, B, p + 1);
    std::printf("%6d %10.4f %12.3f %10.3f %10.1f\n", l, t, t / t0l, double(L - l) / L, f / t / 1e9);
    out["single_layer"].push_back({{"layer", l}, {"seconds", t}, {"gflops", f / t / 1e9}});
  }
  out["trace_seconds"] = t_trace;
  // The whole attribution-shaped workload (every layer once), one call per layer vs batched.
  std::vector<LayerRequest<float>> reqs;
  for (int l = 0; l < L; ++l) {
    reqs.push_back({l, p, tr.acts[l].row(p).replicate(B, 1), 42});
    total_f += flops(m.spec(), l, B, p + 1);
  }
  total_t = best_seconds(1, [&] {
    for (const auto& r : reqs) (void)m.layer_gradients(tr, r.layer, r.position, r.points, r.target);
  });
  std::printf(
      "all %d layers x %d points, one call per layer: %.3f s, %.1f GFLOP/s = %.0f%% of sgemm "
      "peak\n",
      L, B, total_t, total_f / total_t / 1e9, 100.0 * total_f / total_t / 1e9 / peak);
  const double tb = best_seconds(
      reps, [&] { (void)m.layer_gradients(tr, std::span<const LayerRequest<float>>(reqs)); });
  std::printf(
      "all %d layers x %d points, batched:            %.3f s, %.1f GFLOP/s = %.0f%% of sgemm peak "
      "(%.1fx)\n",
      L, B, tb, total_f / tb / 1e9, 100.0 * total_f / tb / 1e9 / peak, total_t / tb);
  out["points"] = B;
  out["layers"] = L;
  out["gflop"] = total_f / 1e9;
  out["per_layer_calls"] = {{"seconds", total_t}, {"gflops", total_f / total_t / 1e9}};
  out["batched"] = {{"seconds", tb},
                    {"gflops", total_f / tb / 1e9},
                    {"of_eigen_sgemm", total_f / tb / 1e9 / peak}};
  if (path.size() > 5 && path.substr(path.size() - 5) == ".gguf") {
    const QuantizedLlamaModel qm(
        load_llama_gguf_quantized(std::make_shared<const io::GgufFile>(path)));
    const auto qtr = qm.trace(ids);
    const std::span<const LayerRequest<float>> all(reqs);
    const double tq = best_seconds(reps, [&] { (void)qm.layer_gradients(qtr, all); });
    const auto gq = qm.layer_gradients(qtr, all), gf = m.layer_gradients(tr, all);
    double diff = 0, scale = 0;
    for (std::size_t i = 0; i < gq.size(); ++i) {
      diff = std::max(diff, double((gq[i].gradients - gf[i].gradients).cwiseAbs().maxCoeff()));
      scale = std::max(scale, double(gf[i].gradients.cwiseAbs().maxCoeff()));
    }
    std::printf(
        "all %d layers x %d points, batched, quantized weights: %.3f s (%.2fx the float32 time), "
        "max |gradient difference| %.2e of max |gradient| %.2e\n",
        L, B, tq, tq / tb, diff, scale);
    out["batched_quantized"] = {{"seconds", tq},
                                {"over_float32", tq / tb},
                                {"max_gradient_difference", diff},
                                {"max_gradient", scale}};
  }
  bench::write_json(json_file, out);
  return 0;
}
