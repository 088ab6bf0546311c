// The main job's (fact, language) pair on the GPU (issue 19): on a Hugging Face Llama-family
// checkpoint (benchmarks/gpu/run.sh writes a random Gemma 3 270M-configuration one, the main job's
// model), in the same process,
//   1. parity GPU vs CPU on the first case: every layer's AMIG-shaped layer_gradients, the AMIG
//      scores and the verification's effects, in FP32, TF32 and BF16;
//   2. pairs/s on the GPU in each precision, a pair being what `knprobe localize` does per fact
//      and language after the screening: AMIG (m = steps, all layers, baselines = each token
//      replaced by the EOS id in turn), selection at `threshold` of the largest score, and the
//      set's verification (P with the set suppressed / enhanced on the fact, on a random and a
//      magnitude-matched control, and on `unrelated` other cases) done twice, as for the
//      fact's own set and its language-independent set; split into attribution / verification;
//      and, in FP32, the verification batched (one multi-prompt call) vs one call per request;
//   2b. the same pairs batched across facts, K = 1, 2, 4, 8, 16 facts at a time: attribute_many
//      (one layer_gradients call over the K facts' traces per answer token) and the K facts'
//      verifications as one multi-prompt call; seconds per pair and the ratio to K = 1, and the
//      scores' distance to attribute() of each fact alone;
//   2c. one fact's stages on the GPU (FP32): trace, AMIG baselines, layer_gradients of one fact
//      and per fact of 8 in one call, the whole attribute, the magnitude control, a
//      one-prompt probabilities call, one verification;
//   3. the same pair on the CPU backend (LlamaModel<float>) at 1, 2, 4, ... threads up to the
//      machine's count: the thread scaling and the GPU / CPU ratio.
//   bench_cuda_llama SPEC.json OUT.json
// SPEC: as benchmarks/gpu/make_checkpoint.py --config gemma3-270m writes it ({"model": DIR,
//        "steps": 20, "gpu_prompts": 32, "cpu_prompts": 1, "baseline_token": 1, "threshold": 0.3,
//        "unrelated": 10, "cases": [{"ids": [...], "target": t}, ...]}).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "knprobe/backend/cuda/llama.hpp"
#include "knprobe/model/llama.hpp"
#include "knprobe/probe/attribution.hpp"
#include "knprobe/probe/knowledge_probe.hpp"
#include "timing.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

using namespace knprobe;
using Clock = std::chrono::steady_clock;
using cuda::Precision;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// Token ids only: the benchmark's prompts are random ids, so nothing is ever encoded; the
/// probe needs a vocabulary of the model's size and nothing else.
class IdsOnly final : public Tokenizer {
 public:
  explicit IdsOnly(int vocab) {
    std::vector<std::string> v(static_cast<std::size_t>(vocab));
    for (int i = 0; i < vocab; ++i) v[static_cast<std::size_t>(i)] = "<" + std::to_string(i) + ">";
    set_vocabulary(v);
  }
  std::vector<TokenId> encode(std::string_view, const EncodeOptions&) const override {
    throw ArgumentError("bench_cuda_llama: the prompts are token ids; nothing is encoded");
  }
  std::string decode(std::span<const TokenId>, bool) const override { return {}; }
};

EncodedFact fact_of(const nlohmann::json& c) {
  EncodedFact f;
  f.tokens = c["ids"].get<std::vector<TokenId>>();
  f.positions = {static_cast<int>(f.tokens.size()) - 1};
  f.targets = {c["target"].get<TokenId>()};
  for (int i = 0; i < static_cast<int>(f.tokens.size()); ++i) f.replaceable.push_back(i);
  return f;
}

struct Sets {
  NeuronSet set, random, magnitude;
};

struct PairResult {
  Attribution attribution;
  Sets sets;
  std::vector<std::vector<Effect>> effects;  ///< [request][factor]
  double attribution_s = 0, verification_s = 0;
};

/// The verifications of several cases (case i with sets s, for each (i, s) of `cases_sets`) as one
/// `effects` call: per case the set suppressed (×0) and enhanced (×2) on the fact, its random and
/// magnitude controls on the fact, the set on `unrelated` other cases.
template <class M>
std::vector<std::vector<Effect>> verify_all(
    const KnowledgeProbe<M>& probe, const nlohmann::json& spec,
    const std::vector<std::pair<std::size_t, const Sets*>>& cases_sets) {
  const auto& cases = spec["cases"];
  const std::size_t k = spec.value("unrelated", 10);
  std::vector<EncodedFact> facts;
  facts.reserve(cases_sets.size() * (k + 1));
  using Req = typename KnowledgeProbe<M>::EffectRequest;
  std::vector<Req> reqs;
  for (const auto& [i, s] : cases_sets) {
    const EncodedFact* f = &facts.emplace_back(fact_of(cases[i % cases.size()]));
    reqs.push_back({f, &s->set});
    reqs.push_back({f, &s->random});
    reqs.push_back({f, &s->magnitude});
    for (std::size_t j = 1; j <= k; ++j)
      reqs.push_back({&facts.emplace_back(fact_of(cases[(i + j) % cases.size()])), &s->set});
  }
  static constexpr double factors[] = {0.0, 2.0};
  return probe.effects(std::span<const Req>(reqs), factors);
}

/// The verification of `s` on case `i`: the set suppressed (×0) and enhanced (×2) on the fact,
/// its random and magnitude controls on the fact, the set on `unrelated` other cases; one
/// `effects` call (batched when the model has HasBatchedProbabilities), or, when `per_call`, one
/// call per request (the fact with its set, each control, each unrelated fact).
template <class M>
std::vector<std::vector<Effect>> verify(const KnowledgeProbe<M>& probe, const nlohmann::json& spec,
                                        std::size_t i, const Sets& s, bool per_call = false) {
  const std::vector<std::pair<std::size_t, const Sets*>> one{{i, &s}};
  if (!per_call) return verify_all(probe, spec, one);
  const auto& cases = spec["cases"];
  const EncodedFact f = fact_of(cases[i % cases.size()]);
  std::vector<EncodedFact> others;
  const std::size_t k = spec.value("unrelated", 10);
  for (std::size_t j = 1; j <= k; ++j) others.push_back(fact_of(cases[(i + j) % cases.size()]));
  using Req = typename KnowledgeProbe<M>::EffectRequest;
  std::vector<Req> reqs{{&f, &s.set}, {&f, &s.random}, {&f, &s.magnitude}};
  for (const auto& u : others) reqs.push_back({&u, &s.set});
  static constexpr double factors[] = {0.0, 2.0};
  std::vector<std::vector<Effect>> out;
  for (const auto& r : reqs) out.push_back(probe.effects(*r.fact, *r.set, factors));
  return out;
}

/// One pair of the main job on case `i`: attribution, selection, controls, and the verification
/// twice (the fact's own set and its LIKN set cost the same).
template <class M>
PairResult pair(const KnowledgeProbe<M>& probe, const nlohmann::json& spec, std::size_t i,
                const AttributionOptions& o) {
  const auto& cases = spec["cases"];
  const EncodedFact f = fact_of(cases[i % cases.size()]);
  PairResult r;
  auto t0 = Clock::now();
  r.attribution = attribute(probe.model(), f, o, spec.value("baseline_token", 1));
  r.attribution_s = seconds_since(t0);
  t0 = Clock::now();
  r.sets.set = KnowledgeProbe<M>::select(r.attribution, spec.value("threshold", 0.3)).neurons;
  r.sets.random = probe.random_control(r.sets.set, 1000 + i);
  r.sets.magnitude = probe.magnitude_control(r.sets.set, f, 2000 + i);
  for (int twice = 0; twice < 2; ++twice) r.effects = verify(probe, spec, i, r.sets);
  r.verification_s = seconds_since(t0);
  return r;
}

template <class M>
nlohmann::json time_pairs(const KnowledgeProbe<M>& probe, const nlohmann::json& spec, int n,
                          const AttributionOptions& o, bool warm_up) {
  if (warm_up) (void)pair(probe, spec, 0, o);  // allocator pool, cuBLAS handles
  double attr = 0, verify = 0, worst_delta = 0;
  const auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    const auto r = pair(probe, spec, static_cast<std::size_t>(i), o);
    attr += r.attribution_s;
    verify += r.verification_s;
    worst_delta = std::max(worst_delta, r.attribution.max_delta());
  }
  const double sec = seconds_since(t0);
  return {{"pairs", n},
          {"seconds", sec},
          {"pairs_per_s", n / sec},
          {"seconds_per_pair", sec / n},
          {"attribution_share", attr / sec},
          {"verification_share", verify / sec},
          {"max_completeness_delta", worst_delta}};
}

/// Pairs batched across facts: `n` pairs (cases 0..n-1) in batches of `K` — attribute_many over
/// the batch, then selection and controls per fact and every fact's verification (twice, as in
/// `pair`) as one multi-prompt call. One warm-up batch first.
template <class M>
nlohmann::json time_batched_pairs(const KnowledgeProbe<M>& probe, const nlohmann::json& spec, int n,
                                  int K, const AttributionOptions& o) {
  const auto& cases = spec["cases"];
  const TokenId baseline = spec.value("baseline_token", 1);
  const double threshold = spec.value("threshold", 0.3);
  double attr = 0, verify_s = 0;
  auto batch = [&](std::size_t i0, int k) {
    std::vector<EncodedFact> facts;
    for (int j = 0; j < k; ++j) facts.push_back(fact_of(cases[(i0 + j) % cases.size()]));
    auto t0 = Clock::now();
    const auto attrs =
        attribute_many(probe.model(), std::span<const EncodedFact>(facts), o, baseline);
    attr += seconds_since(t0);
    t0 = Clock::now();
    std::vector<Sets> sets(static_cast<std::size_t>(k));
    std::vector<std::pair<std::size_t, const Sets*>> cs;
    for (int j = 0; j < k; ++j) {
      const auto u = static_cast<std::size_t>(j);
      auto& s = sets[u];
      s.set = KnowledgeProbe<M>::select(attrs[u], threshold).neurons;
      s.random = probe.random_control(s.set, 1000 + i0 + u);
      s.magnitude = probe.magnitude_control(s.set, facts[u], 2000 + i0 + u);
      cs.emplace_back(i0 + u, &s);
    }
    for (int twice = 0; twice < 2; ++twice) (void)verify_all(probe, spec, cs);
    verify_s += seconds_since(t0);
  };
  batch(0, K);  // warm-up
  attr = verify_s = 0;
  const auto t0 = Clock::now();
  for (int i = 0; i < n; i += K) batch(static_cast<std::size_t>(i), std::min(K, n - i));
  const double sec = seconds_since(t0);
  return {{"facts_per_batch", K},
          {"pairs", n},
          {"seconds", sec},
          {"seconds_per_pair", sec / n},
          {"pairs_per_s", n / sec},
          {"attribution_share", attr / sec},
          {"verification_share", verify_s / sec}};
}

double rel(const MatrixF& a, const MatrixF& b) {
  return static_cast<double>((a - b).norm() / std::max(b.norm(), 1e-30f));
}

double score_rel(const Attribution& a, const Attribution& b) {
  double num = 0, den = 0;
  for (std::size_t l = 0; l < a.scores.shape()[0]; ++l)
    for (std::size_t u = 0; u < a.scores.shape()[1]; ++u) {
      num = std::max(num, std::abs(a.scores(l, u) - b.scores(l, u)));
      den = std::max(den, std::abs(b.scores(l, u)));
    }
  return num / std::max(den, 1e-300);
}

double effect_rel(const std::vector<std::vector<Effect>>& a,
                  const std::vector<std::vector<Effect>>& b) {
  double worst = 0;
  for (std::size_t r = 0; r < a.size(); ++r)
    for (std::size_t k = 0; k < a[r].size(); ++k)
      worst = std::max({worst, std::abs(a[r][k].before - b[r][k].before) / b[r][k].before,
                        std::abs(a[r][k].after - b[r][k].after) / std::max(b[r][k].after, 1e-30)});
  return worst;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s SPEC.json OUT.json\n", argv[0]);
    return 2;
  }
  std::ifstream in(argv[1]);
  const auto spec = nlohmann::json::parse(in);
  const int steps = spec.value("steps", 20), gpu_pairs = spec.value("gpu_prompts", 32),
            cpu_pairs = spec.value("cpu_prompts", 1);
  nlohmann::json out;
  auto t0 = Clock::now();
  const LlamaWeights<float> w = load_llama_safetensors(spec["model"].get<std::string>());
  out["load_seconds"] = seconds_since(t0);
  out["config"] = {{"family", w.spec.family()},      {"layers", w.spec.layers},
                   {"hidden", w.spec.hidden},        {"ffn", w.spec.ffn},
                   {"heads", w.spec.heads},          {"kv_heads", w.spec.kv_heads},
                   {"vocab_size", w.spec.vocab_size}};
  t0 = Clock::now();
  cuda::CudaLlamaModel gpu(w);
  out["upload_seconds"] = seconds_since(t0);
  out["device"] = gpu.engine().device_name();
  const LlamaModel<float> cpu(w);
  const IdsOnly tok(cpu.vocab_size());
  const KnowledgeProbe pg(gpu, tok);
  const KnowledgeProbe pc(cpu, tok);
  std::printf("device %s; %d layers, FFN %d, vocabulary %d\n",
              out["device"].get<std::string>().c_str(), cpu.num_layers(), cpu.ffn_width(),
              cpu.vocab_size());
  std::fflush(stdout);

  AttributionOptions amig;
  amig.method = Method::amig;
  amig.steps = steps;

  // 1. Parity on case 0: layer gradients of every layer, scores, effects.
  const PairResult want = pair(pc, spec, 0, amig);
  {
    const EncodedFact f = fact_of(spec["cases"][0]);
    const auto tc = cpu.trace(f.tokens);
    const auto tg = gpu.trace(f.tokens);
    std::vector<LayerRequest<float>> reqs;
    for (int l = 0; l < cpu.num_layers(); ++l) {
      const VectorF a = tc.activations(l).row(f.positions[0]).transpose();
      MatrixF pts(steps + 2, cpu.ffn_width());
      for (int k = 0; k < steps + 2; ++k)
        pts.row(k) = (a * (static_cast<float>(k) / static_cast<float>(steps + 1))).transpose();
      reqs.push_back({l, f.positions[0], pts, f.targets[0]});
    }
    const auto lg = cpu.layer_gradients(tc, std::span<const LayerRequest<float>>(reqs));
    for (Precision p : {Precision::fp32, Precision::tf32, Precision::bf16}) {
      gpu.set_precision(p);
      const auto got = gpu.layer_gradients(tg, std::span<const LayerRequest<float>>(reqs));
      double g = 0, pr = 0;
      for (std::size_t r = 0; r < got.size(); ++r) {
        g = std::max(g, rel(got[r].gradients, lg[r].gradients));
        pr = std::max(pr, rel(got[r].probabilities, lg[r].probabilities));
      }
      // Scores of the whole attribution; effects of the CPU's own sets (a set chosen on the GPU
      // may differ in a unit whose score lies at the threshold or whose magnitude rank ties).
      const double s =
          score_rel(attribute(gpu, f, amig, spec.value("baseline_token", 1)), want.attribution);
      const double e = effect_rel(verify(pg, spec, 0, want.sets), want.effects);
      out["parity"][cuda::precision_name(p)] = {{"gradients_rel", g},
                                                {"probabilities_rel", pr},
                                                {"scores_max_over_largest", s},
                                                {"effects_rel", e}};
      std::printf(
          "parity %s: gradients %.2e, P %.2e, AMIG scores %.2e of the largest, "
          "effects %.2e\n",
          cuda::precision_name(p), g, pr, s, e);
      std::fflush(stdout);
    }
  }

  // 2. Pairs on the GPU.
  for (Precision p : {Precision::fp32, Precision::tf32, Precision::bf16}) {
    gpu.set_precision(p);
    auto r = time_pairs(pg, spec, gpu_pairs, amig, true);
    std::printf(
        "gpu pair %s: %.3f s per pair (%.2f pairs/s; attribution %.0f %%, verification "
        "%.0f %%)\n",
        cuda::precision_name(p), r["seconds_per_pair"].get<double>(),
        r["pairs_per_s"].get<double>(), 100 * r["attribution_share"].get<double>(),
        100 * r["verification_share"].get<double>());
    std::fflush(stdout);
    out["gpu_pair"][cuda::precision_name(p)] = r;
  }
  // 2b. Pairs batched across facts, each precision; scores vs attribute() alone in FP32.
  for (Precision p : {Precision::fp32, Precision::tf32, Precision::bf16}) {
    gpu.set_precision(p);
    double base = 0;
    for (const int K : {1, 2, 4, 8, 16}) {
      auto r = time_batched_pairs(pg, spec, gpu_pairs, K, amig);
      if (K == 1) base = r["seconds_per_pair"].get<double>();
      r["speedup_over_one_fact"] = base / r["seconds_per_pair"].get<double>();
      std::printf(
          "gpu pairs %s, %2d facts a batch: %.4f s per pair (%.2fx one fact a batch; "
          "attribution %.0f %%)\n",
          cuda::precision_name(p), K, r["seconds_per_pair"].get<double>(),
          r["speedup_over_one_fact"].get<double>(), 100 * r["attribution_share"].get<double>());
      std::fflush(stdout);
      out["gpu_batched_pairs"][cuda::precision_name(p)].push_back(r);
    }
  }
  gpu.set_precision(Precision::fp32);
  {  // attribute_many over 8 facts vs attribute of each alone (FP32): the batching's rounding.
    const auto& cases = spec["cases"];
    std::vector<EncodedFact> facts;
    for (std::size_t j = 0; j < 8; ++j) facts.push_back(fact_of(cases[j % cases.size()]));
    const TokenId b = spec.value("baseline_token", 1);
    const auto many = attribute_many(gpu, std::span<const EncodedFact>(facts), amig, b);
    double worst = 0;
    for (std::size_t j = 0; j < facts.size(); ++j)
      worst = std::max(worst, score_rel(many[j], attribute(gpu, facts[j], amig, b)));
    out["gpu_batched_scores_max_over_largest"] = worst;
    std::printf("attribute_many (8 facts) vs attribute alone, FP32: %.2e of the largest score\n",
                worst);
    std::fflush(stdout);
  }
  {  // 2c. Where one fact's attribution and verification go on the GPU (FP32, best of 5 each).
    const auto& cases = spec["cases"];
    const TokenId b = spec.value("baseline_token", 1);
    std::vector<EncodedFact> facts;
    for (std::size_t j = 0; j < 8; ++j) facts.push_back(fact_of(cases[j % cases.size()]));
    const EncodedFact& f = facts[0];
    std::vector<cuda::CudaLlamaModel::Trace> traces;
    for (const auto& g : facts) traces.push_back(gpu.trace(g.tokens));
    auto requests = [&](std::size_t j) {  // the attribution's points for fact j, every layer
      std::vector<LayerRequest<float>> reqs;
      const auto& g = facts[j];
      for (int l = 0; l < gpu.num_layers(); ++l) {
        const VectorF a = traces[j].activations(l).row(g.positions[0]).transpose();
        MatrixF pts(steps + 1, gpu.ffn_width());
        for (int k = 0; k <= steps; ++k)
          pts.row(k) = (a * (static_cast<float>(k) / static_cast<float>(steps))).transpose();
        reqs.push_back({l, g.positions[0], pts, g.targets[0]});
      }
      return reqs;
    };
    std::vector<std::vector<LayerRequest<float>>> reqs;
    for (std::size_t j = 0; j < facts.size(); ++j) reqs.push_back(requests(j));
    std::vector<TracedRequests<cuda::CudaLlamaModel::Trace, float>> batch;
    for (std::size_t j = 0; j < facts.size(); ++j)
      batch.push_back({&traces[j], std::span<const LayerRequest<float>>(reqs[j])});
    const Sets& sets = want.sets;
    const std::vector<InterventionPattern> none(1);
    const std::vector<Query> q{{f.positions[0], f.targets[0]}};
    const std::vector<ProbabilityRequest> one_prompt{{f.tokens, none, q}};
    nlohmann::json st;
    st["trace"] = bench::best_seconds(5, [&] { (void)gpu.trace(f.tokens); });
    st["amig_baselines"] = bench::best_seconds(5, [&] { (void)detail::amig_baselines(gpu, f, b); });
    st["layer_gradients_one_fact"] = bench::best_seconds(5, [&] {
      (void)gpu.layer_gradients(traces[0], std::span<const LayerRequest<float>>(reqs[0]));
    });
    st["layer_gradients_8_facts_per_fact"] =
        bench::best_seconds(
            5,
            [&] {
              (void)gpu.layer_gradients(
                  std::span<const TracedRequests<cuda::CudaLlamaModel::Trace, float>>(batch));
            }) /
        8;
    st["attribute"] = bench::best_seconds(5, [&] { (void)attribute(gpu, f, amig, b); });
    st["magnitude_control"] =
        bench::best_seconds(5, [&] { (void)pg.magnitude_control(sets.set, f, 7); });
    st["probabilities_one_prompt_no_intervention"] = bench::best_seconds(
        5, [&] { (void)gpu.probabilities(std::span<const ProbabilityRequest>(one_prompt)); });
    st["verification_once"] = bench::best_seconds(5, [&] { (void)verify(pg, spec, 0, sets); });
    out["gpu_stages_fp32"] = st;
    std::printf("gpu stages (fp32, s):");
    for (const auto& [k, v] : st.items()) std::printf(" %s %.4f;", k.c_str(), v.get<double>());
    std::printf("\n");
    std::fflush(stdout);
  }
  {  // The verification of one pair on the GPU: batched vs one call per request.
    const double batched = bench::best_seconds(3, [&] { (void)verify(pg, spec, 0, want.sets); });
    const double single =
        bench::best_seconds(3, [&] { (void)verify(pg, spec, 0, want.sets, true); });
    out["gpu_verification_fp32"] = {
        {"batched_seconds", batched}, {"per_call_seconds", single}, {"speedup", single / batched}};
    std::printf("gpu verification (fp32): batched %.4f s, one call per request %.4f s (%.1fx)\n",
                batched, single, single / batched);
    std::fflush(stdout);
  }

  // 3. The CPU backend at 1, 2, 4, ... threads (same process, same pairs).
  const int max_t = detail::max_threads();
  for (int t = 1;; t = std::min(2 * t, max_t)) {
#if defined(_OPENMP)
    omp_set_num_threads(t);
#endif
    auto r = time_pairs(pc, spec, cpu_pairs, amig, false);
    r["threads"] = t;
    std::printf("cpu pair, %d thread(s): %.2f s per pair\n", t,
                r["seconds_per_pair"].get<double>());
    std::fflush(stdout);
    out["cpu_pair"].push_back(r);
    if (t == max_t) break;
  }
  const double cpu_all_threads = out["cpu_pair"].back()["seconds_per_pair"].get<double>();
  out["gpu_fp32_over_cpu_all_threads"] =
      cpu_all_threads / out["gpu_pair"]["fp32"]["seconds_per_pair"].get<double>();
  std::printf("GPU FP32 / CPU (%d threads): %.1fx\n", max_t,
              out["gpu_fp32_over_cpu_all_threads"].get<double>());
  std::ofstream(argv[2]) << out.dump(1);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_cuda_llama: %s\n", e.what());
  return 1;
}
