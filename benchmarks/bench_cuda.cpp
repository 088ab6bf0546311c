// The GPU benchmark of issue 7 (knprobe's side of benchmarks/gpu/run.sh): on one Hugging Face
// GPT-2-architecture checkpoint (the script writes a random mGPT-1.3B-configuration one),
//   1. parity GPU vs CPU: neuron activations, P and layer_gradients of every layer (the points an
//      AMIG attribution asks for) in FP32, TF32 and BF16;
//   2. AMIG (m = steps, all layers) prompts/s on the GPU in each precision, with the achieved
//      TFLOP/s (FLOPs counted from the shapes) against the card's peak;
//   3. the same AMIG on the CPU for a few prompts (the GPU/CPU ratio, same process);
//   4. IG in the EleutherAI reference configuration (pre-activation site, linspace, paper_compat)
//      on the GPU, timed, with its scores for the first prompt written for the parity check
//      against `knowledge-neurons` done by the script.
//   bench_cuda SPEC.json OUT.json
// SPEC: {"model": DIR, "steps": 20, "gpu_prompts": 64, "cpu_prompts": 2, "baseline_token": 1,
//        "peak_tflops": {"fp32": 67, "tf32": 495, "bf16": 989}, "cases": [{"ids": [...],
//        "target": t}, ...]}
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "knprobe/backend/cuda/gpt2.hpp"
#include "knprobe/model/gpt2.hpp"
#include "knprobe/probe/attribution.hpp"

using namespace knprobe;
using Clock = std::chrono::steady_clock;
using cuda::Precision;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

EncodedFact fact_of(const nlohmann::json& c) {
  EncodedFact f;
  f.tokens = c["ids"].get<std::vector<TokenId>>();
  f.positions = {static_cast<int>(f.tokens.size()) - 1};
  f.targets = {c["target"].get<TokenId>()};
  for (int i = 0; i < static_cast<int>(f.tokens.size()); ++i) f.replaceable.push_back(i);
  return f;
}

/// FLOPs of one attribution of `f` over all layers (GEMMs only; attention and the element-wise
/// kernels are a few per cent at these prompt lengths): traces (1 + AMIG baselines) and one
/// batched layer_gradients call with B = steps + 2 points per layer, as Gpt2Engine runs it.
double attribution_flops(const io::Gpt2Config& c, const EncodedFact& f, int steps, bool amig) {
  const double d = c.n_embd, F = c.ffn_width(), V = c.vocab_size, L = c.n_layer;
  const double n = static_cast<double>(f.tokens.size());
  const double layer_fwd = 2 * (4 * d * d + 2 * d * F);  // per row
  const double traces = 1 + (amig ? static_cast<double>(f.replaceable.size()) : 0);
  double flops = traces * n * L * layer_fwd;
  const double B = steps + 2;
  for (int l = 0; l < c.n_layer; ++l) {
    const double nb = B * l, nu = B * (l + 1);
    flops += 2 * nb * (4 * d * d + d * F) + 2 * nu * d * F;  // forward
    flops += 2 * nu * d * F + 2 * nb * (d * F + 4 * d * d);  // backward (inputs only)
  }
  flops += 2 * (B * L) * d * V * 2;  // output head, forward and backward
  return flops;
}

template <class M>
nlohmann::json time_attribution(const M& m, const nlohmann::json& spec, int prompts,
                                const AttributionOptions& o, TokenId baseline,
                                const io::Gpt2Config& cfg, nlohmann::json* first_scores,
                                bool warm_up = true) {
  const auto& cases = spec["cases"];
  if (warm_up) (void)attribute(m, fact_of(cases[0]), o, baseline);  // allocator pool, cuBLAS
  double flops = 0, worst_delta = 0;
  const auto t0 = Clock::now();
  for (int i = 0; i < prompts; ++i) {
    const EncodedFact f = fact_of(cases[static_cast<std::size_t>(i) % cases.size()]);
    const auto a = attribute(m, f, o, baseline);
    flops += attribution_flops(cfg, f, o.steps, o.method == Method::amig);
    worst_delta = std::max(worst_delta, a.max_delta());
    if (i == 0 && first_scores) {
      std::vector<std::vector<double>> s(a.scores.shape()[0]);
      for (std::size_t l = 0; l < s.size(); ++l)
        for (std::size_t u = 0; u < a.scores.shape()[1]; ++u) s[l].push_back(a.scores(l, u));
      *first_scores = s;
    }
  }
  const double sec = seconds_since(t0);
  return {{"prompts", prompts},
          {"seconds", sec},
          {"prompts_per_s", prompts / sec},
          {"tflops", flops / sec / 1e12},
          {"max_completeness_delta", worst_delta}};
}

double rel(const MatrixF& a, const MatrixF& b) {
  return static_cast<double>((a - b).norm() / std::max(b.norm(), 1e-30f));
}

/// GPU vs CPU on the first `n` cases: activations, and every layer's AMIG-shaped request batch.
nlohmann::json parity(const Gpt2Model<float>& cpu, cuda::CudaGpt2Model<>& gpu,
                      const nlohmann::json& spec, int n, int steps) {
  nlohmann::json out;
  double act = 0;
  std::vector<std::vector<LayerGradients<float>>> want;
  std::vector<std::vector<LayerRequest<float>>> all_reqs;
  std::vector<cuda::CudaGpt2Model<>::Trace> traces;
  for (int i = 0; i < n; ++i) {
    const EncodedFact f = fact_of(spec["cases"][static_cast<std::size_t>(i)]);
    const auto tc = cpu.trace(f.tokens);
    traces.push_back(gpu.trace(f.tokens));
    std::vector<LayerRequest<float>> reqs;
    for (int l = 0; l < cpu.num_layers(); ++l) {
      act = std::max(act, rel(traces.back().activations(l), tc.activations(l)));
      const VectorF a = tc.activations(l).row(f.positions[0]).transpose();
      MatrixF pts(steps + 2, cpu.ffn_width());
      for (int k = 0; k < steps + 2; ++k)
        pts.row(k) = (a * (static_cast<float>(k) / static_cast<float>(steps + 1))).transpose();
      reqs.push_back({l, f.positions[0], pts, f.targets[0]});
    }
    want.push_back(cpu.layer_gradients(tc, std::span<const LayerRequest<float>>(reqs)));
    all_reqs.push_back(std::move(reqs));
  }
  out["activations_rel"] = act;
  for (Precision p : {Precision::fp32, Precision::tf32, Precision::bf16}) {
    gpu.set_precision(p);
    double g = 0, pr = 0;
    for (int i = 0; i < n; ++i) {
      const auto got = gpu.layer_gradients(
          traces[static_cast<std::size_t>(i)],
          std::span<const LayerRequest<float>>(all_reqs[static_cast<std::size_t>(i)]));
      for (std::size_t r = 0; r < got.size(); ++r) {
        g = std::max(g, rel(got[r].gradients, want[static_cast<std::size_t>(i)][r].gradients));
        pr = std::max(
            pr, rel(got[r].probabilities, want[static_cast<std::size_t>(i)][r].probabilities));
      }
    }
    out[cuda::precision_name(p)] = {{"gradients_rel", g}, {"probabilities_rel", pr}};
    std::printf("parity %s: gradients %.2e, probabilities %.2e\n", cuda::precision_name(p), g, pr);
  }
  gpu.set_precision(Precision::fp32);
  return out;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s SPEC.json OUT.json\n", argv[0]);
    return 2;
  }
  std::ifstream in(argv[1]);
  const auto spec = nlohmann::json::parse(in);
  const int steps = spec.value("steps", 20), gpu_prompts = spec.value("gpu_prompts", 32),
            cpu_prompts = spec.value("cpu_prompts", 1);
  const TokenId baseline = spec.value("baseline_token", 1);
  nlohmann::json out;
  auto t0 = Clock::now();
  auto w = load_gpt2_safetensors(spec["model"].get<std::string>());
  out["load_seconds"] = seconds_since(t0);
  const io::Gpt2Config cfg = w.config;
  out["config"] = {{"n_layer", cfg.n_layer},       {"n_embd", cfg.n_embd},
                   {"n_head", cfg.n_head},         {"ffn", cfg.ffn_width()},
                   {"vocab_size", cfg.vocab_size}, {"n_positions", cfg.n_positions}};
  t0 = Clock::now();
  cuda::CudaGpt2Model<> gpu(w);
  out["upload_seconds"] = seconds_since(t0);
  out["device"] = gpu.engine().device_name();
  out["weight_gib"] = static_cast<double>(gpu.engine().weight_bytes()) / (1 << 30);
  std::printf("device %s, weights %.2f GiB\n", out["device"].get<std::string>().c_str(),
              out["weight_gib"].get<double>());
  std::fflush(stdout);
  const Gpt2Model<float> cpu(w);
  out["parity"] = parity(cpu, gpu, spec, spec.value("parity_prompts", 2), steps);
  std::fflush(stdout);

  AttributionOptions amig;
  amig.method = Method::amig;
  amig.steps = steps;
  const auto peak = spec.value("peak_tflops", nlohmann::json::object());
  for (Precision p : {Precision::fp32, Precision::tf32, Precision::bf16}) {
    gpu.set_precision(p);
    auto r = time_attribution(gpu, spec, gpu_prompts, amig, baseline, cfg, nullptr);
    const char* name = cuda::precision_name(p);
    if (peak.contains(name))
      r["fraction_of_peak"] = r["tflops"].get<double>() / peak[name].get<double>();
    std::printf("gpu AMIG %s: %.2f prompts/s, %.1f TFLOP/s\n", name,
                r["prompts_per_s"].get<double>(), r["tflops"].get<double>());
    std::fflush(stdout);
    out["gpu_amig"][name] = r;
  }
  gpu.set_precision(Precision::fp32);
  out["cpu_amig"] =
      time_attribution(cpu, spec, cpu_prompts, amig, baseline, cfg, nullptr, /*warm_up=*/false);
  out["gpu_over_cpu_fp32"] = out["gpu_amig"]["fp32"]["prompts_per_s"].get<double>() /
                             out["cpu_amig"]["prompts_per_s"].get<double>();
  std::printf("cpu AMIG: %.3f prompts/s; GPU/CPU %.1fx\n",
              out["cpu_amig"]["prompts_per_s"].get<double>(),
              out["gpu_over_cpu_fp32"].get<double>());
  std::fflush(stdout);

  // The EleutherAI reference configuration, for the comparison with knowledge-neurons.
  {
    const cuda::CudaGpt2Model<NeuronSite::pre_activation> ref(w);
    AttributionOptions o;
    o.method = Method::ig;
    o.steps = steps;
    o.quadrature = Quadrature::linspace;
    o.paper_compat = true;
    nlohmann::json scores;
    out["gpu_ig_reference_mode"] = time_attribution(
        ref, spec, spec.value("reference_prompts", gpu_prompts), o, baseline, cfg, &scores);
    out["reference_mode_scores_case0"] = scores;
    std::printf("gpu IG reference mode: %.2f prompts/s\n",
                out["gpu_ig_reference_mode"]["prompts_per_s"].get<double>());
  }
  std::ofstream(argv[2]) << out.dump();
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_cuda: %s\n", e.what());
  return 1;
}
