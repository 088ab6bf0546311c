// CUDA GPT-2 backend (label `gpu`, skipped without a device): parity with Hugging Face
// transformers (the fixtures the CPU backend passes), with the CPU Gpt2Model (activations,
// batched layer_gradients over layers and positions, interventions, attribution scores) at 1e-4
// relative in FP32, finite differences of its own gradients, TF32 / BF16 errors reported, exact
// undo of value-vector edits, and the errors: bad arguments, out of memory, a model too large.
#include "knprobe/backend/cuda/gpt2.hpp"

#include <boost/test/unit_test.hpp>
#include <cstring>

#include "knprobe/probe/attribution.hpp"
#include "support/finite_diff.hpp"
#include "support/hash_checkpoint.hpp"
#include "support/hf_parity.hpp"
#include "support/paths.hpp"

// GCC 12 reports a false maybe-uninitialized inside boost::function for test decorators.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

using namespace knprobe;
using cuda::CudaGpt2Model;
using cuda::Precision;

KNPROBE_ASSERT_PROBEABLE(CudaGpt2Model<>);
KNPROBE_ASSERT_PROBEABLE(CudaGpt2Model<NeuronSite::pre_activation>);
static_assert(HasBatchedLayerGradients<CudaGpt2Model<>>);
static_assert(HasBatchedMeanActivations<CudaGpt2Model<>>);
static_assert(HasBatchedProbabilities<CudaGpt2Model<>>);
static_assert(HasMultiTraceLayerGradients<CudaGpt2Model<>>);

namespace {
struct HasDevice {
  boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
    boost::test_tools::assertion_result r(cuda::device_count() > 0);
    r.message() << "no CUDA device";
    return r;
  }
};
std::filesystem::path tiny() {
  return testing::data_dir() / "hf" / "gpt2_tiny";
}
const std::vector<TokenId> k_tokens{1, 17, 5, 33, 3, 41, 12, 2};

double rel(const MatrixF& a, const MatrixF& b) {
  return static_cast<double>((a - b).norm() / std::max(b.norm(), 1e-30f));
}

/// Requests over every layer at mixed positions with random points near the activations.
template <class M>
std::vector<LayerRequest<float>> mixed_requests(const M& m, const typename M::Trace& t, Rng& rng) {
  std::vector<LayerRequest<float>> reqs;
  for (int l = m.num_layers() - 1; l >= 0; --l) {  // unsorted on purpose
    const int pos = (l * 3 + 2) % t.num_tokens();
    MatrixF pts = t.activations(l).row(pos).replicate(3, 1);
    pts.row(1) *= 0.5f;
    pts.row(2) += testing::random_matrix<float>(rng, 1, m.ffn_width(), 0.3);
    reqs.push_back({l, pos, pts, TokenId(7 + l)});
  }
  return reqs;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(cuda_gpt2, *boost::unit_test::precondition(HasDevice()))

BOOST_AUTO_TEST_CASE(tiny_checkpoint_matches_transformers) {
  const auto exp = testing::read_json(tiny() / "expected.json");
  testing::check_hf_parity(CudaGpt2Model<>::load(tiny()), exp, "cuda gpt2_tiny post");
  testing::check_hf_parity(CudaGpt2Model<NeuronSite::pre_activation>::load(tiny()), exp,
                           "cuda gpt2_tiny pre", "grad_pre", "activation_pre");
}

BOOST_AUTO_TEST_CASE(real_gpt2_configuration_matches_transformers) {
  const auto fixture = testing::data_dir() / "hf" / "gpt2_realcfg";
  testing::TempDir dir;
  testing::write_hash_checkpoint(fixture, dir.path());
  const auto m = CudaGpt2Model<>::load(dir.path());
  BOOST_TEST(m.ffn_width() == 3072);
  testing::check_hf_parity(m, testing::read_json(fixture / "expected.json"), "cuda gpt2 real");
}

BOOST_AUTO_TEST_CASE(matches_the_cpu_backend_in_fp32_and_reports_tf32_bf16) {
  const auto w = load_gpt2_safetensors(tiny());
  const Gpt2Model<float> cpu(w);
  CudaGpt2Model<> gpu(w);
  const auto tc = cpu.trace(k_tokens);
  const auto tg = gpu.trace(k_tokens);
  for (int l = 0; l < cpu.num_layers(); ++l)
    BOOST_TEST(rel(tg.activations(l), tc.activations(l)) < 1e-5, "activations layer " << l);
  BOOST_TEST(rel(gpu.logits(tg), cpu.logits(tc)) < 1e-5);
  Rng rng(5);
  const auto reqs = mixed_requests(cpu, tc, rng);
  const auto want = cpu.layer_gradients(tc, std::span<const LayerRequest<float>>(reqs));
  for (Precision p : {Precision::fp32, Precision::tf32, Precision::bf16}) {
    gpu.set_precision(p);
    const auto got = gpu.layer_gradients(tg, std::span<const LayerRequest<float>>(reqs));
    double worst_g = 0, worst_p = 0;
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      worst_g = std::max(worst_g, rel(got[i].gradients, want[i].gradients));
      worst_p = std::max(worst_p, rel(got[i].probabilities, want[i].probabilities));
    }
    BOOST_TEST_MESSAGE(cuda::precision_name(p) << ": gradients " << worst_g << ", P " << worst_p);
    const double tol = p == Precision::fp32 ? 1e-4 : 5e-2;
    BOOST_TEST(worst_g < tol, cuda::precision_name(p) << " gradients " << worst_g);
    BOOST_TEST(worst_p < tol, cuda::precision_name(p) << " probabilities " << worst_p);
  }
  gpu.set_precision(Precision::fp32);
  // One request at a time gives what the batch gives.
  for (std::size_t i = 0; i < reqs.size(); i += 2) {
    const auto one =
        gpu.layer_gradients(tg, reqs[i].layer, reqs[i].position, reqs[i].points, reqs[i].target);
    BOOST_TEST(rel(one.gradients, want[i].gradients) < 1e-4);
  }
}

BOOST_AUTO_TEST_CASE(gradients_match_finite_differences) {
  const CudaGpt2Model<> m = CudaGpt2Model<>::load(tiny());
  const auto t = m.trace(k_tokens);
  Rng rng(3);
  for (int layer : {0, 2}) {
    const int pos = 6;
    const MatrixF a = t.activations(layer).row(pos);
    const auto g = m.layer_gradients(t, layer, pos, a, 9);
    auto loss = [&](const MatrixD& x) {
      return static_cast<double>(
          m.layer_gradients(t, layer, pos, MatrixF(x.cast<float>()), 9).probabilities[0]);
    };
    const double err =
        testing::gradient_error(loss, a.cast<double>(), g.gradients.cast<double>(), rng, 16, 1e-2);
    BOOST_TEST(err < 2e-2, "layer " << layer << " finite-difference error " << err);
  }
}

BOOST_AUTO_TEST_CASE(interventions_match_the_cpu_backend) {
  const auto w = load_gpt2_safetensors(tiny());
  const Gpt2Model<float, NeuronSite::pre_activation> cpu(w);
  const CudaGpt2Model<NeuronSite::pre_activation> gpu(w);
  std::vector<InterventionPattern> pats(3);
  pats[1].push_back({1, 5, 4, InterventionOp::set, 3.0});
  pats[1].push_back({1, 5, 4, InterventionOp::scale, 0.5});  // order matters: 1.5
  pats[2].push_back({0, 7, 2, InterventionOp::scale, 0.0});
  pats[2].push_back({2, 9, 6, InterventionOp::scale, 2.0});
  const std::vector<Query> qs{{4, 9}, {6, 11}, {1, 4}, {7, 3}};
  const MatrixF want = cpu.probabilities(k_tokens, pats, qs);
  const MatrixF got = gpu.probabilities(k_tokens, pats, qs);
  BOOST_TEST(rel(got, want) < 1e-5, "probabilities " << rel(got, want));
  BOOST_TEST(got(1, 2) == got(0, 2));  // position 1 < 4: untouched
  // Several prompts of different lengths in one call (learned positions per row): equal to the
  // CPU backend's single-prompt form of each.
  const std::vector<TokenId> shorter{9, 4, 22, 7, 1}, longer{3, 8, 1, 17, 5, 33, 3, 41, 12, 2, 6};
  std::vector<InterventionPattern> pats2(2);
  pats2[1].push_back({2, 11, 3, InterventionOp::scale, 0.0});
  const std::vector<Query> qs2{{4, 6}, {3, 2}}, qs3{{10, 5}};
  const std::vector<InterventionPattern> clean(1);
  const std::vector<ProbabilityRequest> batch{
      {k_tokens, pats, qs}, {shorter, pats2, qs2}, {longer, clean, qs3}};
  const auto b = gpu.probabilities(std::span<const ProbabilityRequest>(batch));
  BOOST_TEST_REQUIRE(b.size() == batch.size());
  for (std::size_t r = 0; r < batch.size(); ++r) {
    const MatrixF w = cpu.probabilities(batch[r].tokens, batch[r].patterns, batch[r].queries);
    BOOST_TEST(rel(b[r], w) < 1e-5, "batched request " << r << " " << rel(b[r], w));
  }
  const std::vector<TokenId> bad{1, 64};
  const std::vector<ProbabilityRequest> wrong{{k_tokens, pats, qs}, {bad, clean, qs3}};
  BOOST_TEST(testing::throws_with<ArgumentError>(
      [&] { gpu.probabilities(std::span<const ProbabilityRequest>(wrong)); },
      {"request 1", "token id 64"}));
  const std::vector<ProbabilityRequest> far{{shorter, pats, qs}};
  BOOST_TEST(testing::throws_with<ArgumentError>(
      [&] { gpu.probabilities(std::span<const ProbabilityRequest>(far)); },
      {"request 0", "pattern 2", "position 6", "5 tokens"}));
}

BOOST_AUTO_TEST_CASE(multi_prompt_probabilities_across_several_row_groups) {
  // 80 prompts of 6–10 tokens × 8 patterns; every third prompt's last query is at n − 3, so its
  // rows stop there and its interventions at n − 2 and n − 1 are dropped (causal: they cannot
  // change a query). Rows: 8 × (640 tokens − 2 × 27 cut prompts) = 4688, more than the engine's
  // 4096 rows of one group, so the call runs in two groups. Default (post-activation) neuron site.
  // Every request equals its single-prompt call on the GPU (the trace-based path, no cut), and
  // prompts of each length are checked against the CPU backend.
  const auto w = load_gpt2_safetensors(tiny());
  const Gpt2Model<float> cpu(w);
  const CudaGpt2Model<> gpu(w);
  const int F = gpu.ffn_width(), L = gpu.num_layers();
  std::vector<std::vector<TokenId>> tokens;
  std::vector<std::vector<InterventionPattern>> pats;
  std::vector<std::vector<Query>> qs;
  for (int r = 0; r < 80; ++r) {
    const int n = 6 + r % 5;
    std::vector<TokenId> t;
    for (int j = 0; j < n; ++j) t.push_back(TokenId((r * 7 + j * 13 + 1) % 64));
    tokens.push_back(t);
    std::vector<InterventionPattern> p(8);
    for (int b = 1; b < 8; ++b) {
      p[b].push_back({b % L, (r * 7 + b) % F, n - 1 - b % 3,
                      b % 2 ? InterventionOp::scale : InterventionOp::set, b % 3 ? 0.0 : 2.0});
      p[b].push_back({(b + 1) % L, (r + b * 5) % F, n - 1, InterventionOp::scale, 0.5});
    }
    pats.push_back(p);
    qs.push_back({{r % 3 == 0 ? n - 3 : n - 1, TokenId((r + 3) % 64)}, {2, TokenId(r % 64)}});
  }
  std::vector<ProbabilityRequest> batch;
  for (int r = 0; r < 80; ++r) batch.push_back({tokens[r], pats[r], qs[r]});
  const auto got = gpu.probabilities(std::span<const ProbabilityRequest>(batch));
  BOOST_TEST_REQUIRE(got.size() == batch.size());
  double worst = 0, worst_cpu = 0;
  for (std::size_t r = 0; r < batch.size(); ++r) {
    const MatrixF one = gpu.probabilities(batch[r].tokens, batch[r].patterns, batch[r].queries);
    BOOST_TEST_REQUIRE(got[r].rows() == 8);
    BOOST_TEST_REQUIRE(got[r].cols() == 2);
    worst = std::max(worst, rel(got[r], one));
    if (r % 17 == 0)  // r = 0, 17, 34, 51, 68: 6, 8, 10, 7 and 9 tokens, two of them cut
      worst_cpu = std::max(
          worst_cpu,
          rel(got[r], cpu.probabilities(batch[r].tokens, batch[r].patterns, batch[r].queries)));
  }
  BOOST_TEST(worst < 1e-5, "batched vs single, worst " << worst);
  BOOST_TEST(worst_cpu < 1e-5, "batched vs CPU, worst " << worst_cpu);
  // No requests; a request with queries but no patterns; one with patterns but no queries.
  BOOST_TEST(gpu.probabilities(std::span<const ProbabilityRequest>()).empty());
  const std::vector<InterventionPattern> no_patterns;
  const std::vector<Query> no_queries;
  const std::vector<ProbabilityRequest> odd{{tokens[0], no_patterns, qs[0]},
                                            {tokens[1], pats[1], no_queries},
                                            {tokens[2], pats[2], qs[2]}};
  const auto o = gpu.probabilities(std::span<const ProbabilityRequest>(odd));
  BOOST_TEST_REQUIRE(o.size() == 3u);
  BOOST_TEST(o[0].rows() == 0);
  BOOST_TEST(o[0].cols() == 2);
  BOOST_TEST(o[1].rows() == 8);
  BOOST_TEST(o[1].cols() == 0);
  BOOST_TEST(rel(o[2], got[2]) < 1e-5);
}

BOOST_AUTO_TEST_CASE(attribution_scores_match_the_cpu_backend) {
  const auto w = load_gpt2_safetensors(tiny());
  const Gpt2Model<float> cpu(w);
  const CudaGpt2Model<> gpu(w);
  EncodedFact f;
  f.tokens = k_tokens;
  f.positions = {7};
  f.targets = {9};
  f.replaceable = {0, 1, 2, 3};
  AttributionOptions o;
  o.method = Method::amig;
  o.steps = 8;
  const auto a = attribute(cpu, f, o, 2);
  const auto b = attribute(gpu, f, o, 2);
  double num = 0, den = 0;
  for (std::size_t l = 0; l < a.scores.shape()[0]; ++l)
    for (std::size_t i = 0; i < a.scores.shape()[1]; ++i) {
      num += (a.scores(l, i) - b.scores(l, i)) * (a.scores(l, i) - b.scores(l, i));
      den += a.scores(l, i) * a.scores(l, i);
    }
  BOOST_TEST(std::sqrt(num / den) < 1e-4);
  BOOST_TEST(std::abs(a.max_delta() - b.max_delta()) < 1e-5);
}

BOOST_AUTO_TEST_CASE(batched_amig_baselines_equal_one_trace_per_prompt) {
  const auto m = CudaGpt2Model<NeuronSite::pre_activation>::load(tiny());
  EncodedFact f;
  f.tokens = k_tokens;
  f.positions = {7, 5};
  f.replaceable = {0, 2, 3, 6};
  std::vector<std::vector<TokenId>> prompts;
  MatrixF want0 = MatrixF::Zero(2, m.ffn_width()), want2 = want0;
  for (int k : f.replaceable) {
    prompts.push_back(k_tokens);
    prompts.back()[static_cast<std::size_t>(k)] = 2;
    const auto t = m.trace(prompts.back());
    for (int i = 0; i < 2; ++i) {
      want0.row(i) += t.activations(0).row(f.positions[static_cast<std::size_t>(i)]) / 4.0f;
      want2.row(i) += t.activations(2).row(f.positions[static_cast<std::size_t>(i)]) / 4.0f;
    }
  }
  const auto got = m.mean_site_activations(std::span<const std::vector<TokenId>>(prompts),
                                           std::span<const int>(f.positions));
  BOOST_TEST(got.size() == 3u);
  BOOST_TEST(rel(got[0], want0) < 1e-5);
  BOOST_TEST(rel(got[2], want2) < 1e-5);
  // attribute() takes this path; the CPU model traces one by one: same baselines.
  const auto base = detail::amig_baselines(m, f, 2);
  BOOST_TEST(rel(MatrixF(base[2][1].transpose()), MatrixF(want2.row(1))) < 1e-5);
}

BOOST_AUTO_TEST_CASE(value_vector_edits_undo_bit_exactly) {
  auto m = CudaGpt2Model<>::load(tiny());
  const auto cpu = Gpt2Model<float>::load(tiny());
  const VectorF v = m.value_vector(2, 5);
  BOOST_TEST(std::memcmp(v.data(), cpu.value_vector(2, 5).data(), sizeof(float) * 32) == 0);
  const auto before =
      m.probabilities(k_tokens, std::vector<InterventionPattern>(1), std::vector<Query>{{7, 9}});
  const VectorF w = v * 3.0f;
  m.set_value_vector(2, 5, w);
  BOOST_TEST(std::memcmp(m.value_vector(2, 5).data(), w.data(), sizeof(float) * 32) == 0);
  BOOST_TEST(bool(m.value_vector(2, 6) == cpu.value_vector(2, 6)));  // neighbours untouched
  m.set_value_vector(2, 5, v);
  BOOST_TEST(std::memcmp(m.value_vector(2, 5).data(), v.data(), sizeof(float) * 32) == 0);
  const auto after =
      m.probabilities(k_tokens, std::vector<InterventionPattern>(1), std::vector<Query>{{7, 9}});
  BOOST_TEST(after(0, 0) == before(0, 0));
  BOOST_TEST(bool(m.token_embedding(3) == cpu.token_embedding(3)));
}

BOOST_AUTO_TEST_CASE(bad_arguments_and_memory_errors_are_named) {
  using testing::throws_with;
  const auto m = CudaGpt2Model<>::load(tiny());
  const auto t = m.trace(k_tokens);
  const MatrixF pts = MatrixF::Zero(1, m.ffn_width());
  BOOST_TEST(throws_with<ArgumentError>([&] { m.layer_gradients(t, 3, 0, pts, 1); }, {"layer 3"}));
  BOOST_TEST(
      throws_with<ArgumentError>([&] { m.layer_gradients(t, 0, 8, pts, 1); }, {"position 8"}));
  BOOST_TEST(
      throws_with<ArgumentError>([&] { m.layer_gradients(t, 0, 0, pts, 64); }, {"token id 64"}));
  BOOST_TEST(throws_with<ArgumentError>(
      [&] {
        m.trace(std::vector<TokenId>{1, 99});
      },
      {"token id 99"}));
  BOOST_TEST(throws_with<ArgumentError>([&] { m.trace(std::vector<TokenId>(33, 1)); },
                                        {"33 tokens", "n_positions"}));
  BOOST_TEST(throws_with<ShapeError>([&] { m.layer_gradients(t, 0, 0, MatrixF::Zero(1, 5), 1); },
                                     {"layer_gradients points"}));
  // 1 PiB cannot be allocated: the message names the size.
  BOOST_TEST(throws_with<cuda::CudaError>([] { cuda::probe_allocation(std::size_t(1) << 50); },
                                          {"out of device memory", "1125899906842624 bytes"}));
  // A model far larger than the card is refused before any upload.
  cuda::DecoderShape huge;
  huge.n_layer = 1;
  huge.n_head = huge.n_kv_head = 16;
  huge.head_dim = 4096;
  huge.d_model = 65536;
  huge.ffn = 262144;
  huge.vocab = 1 << 20;
  cuda::DecoderHostWeights none;
  none.layers.resize(1);
  BOOST_TEST(throws_with<cuda::CudaError>([&] { cuda::DecoderEngine e(huge, none); },
                                          {"the model needs", "GiB", "use the CPU backend"}));
}

BOOST_AUTO_TEST_SUITE_END()
