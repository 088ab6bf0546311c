// CUDA Llama-family backend (label `gpu`, skipped without a device): parity with transformers
// (tiny Llama and Gemma 3 checkpoints), with the CPU LlamaModel on Gemma-3-shaped and
// Llama-2-shaped random weights (QK-norm, sandwich norms, sliding window, grouped-query heads,
// both RoPE layouts) and on the real stories260K checkpoint: activations, batched
// layer_gradients, interventions, AMIG baselines and scores; FP32 at 1e-4, TF32 / BF16 reported.
#include "knprobe/backend/cuda/llama.hpp"

#include <boost/test/unit_test.hpp>
#include <cstring>

#include "knprobe/model/llama.hpp"
#include "knprobe/probe/attribution.hpp"
#include "support/finite_diff.hpp"
#include "support/hf_parity.hpp"
#include "support/paths.hpp"
#include "support/random_llama.hpp"

// GCC 12 reports a false (maybe-)uninitialized inside boost::function for test decorators.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

using namespace knprobe;
using cuda::CudaLlamaModel;
using cuda::Precision;

KNPROBE_ASSERT_PROBEABLE(CudaLlamaModel);
static_assert(HasBatchedLayerGradients<CudaLlamaModel>);
static_assert(HasBatchedMeanActivations<CudaLlamaModel>);
static_assert(HasBatchedProbabilities<CudaLlamaModel>);
static_assert(HasMultiTraceLayerGradients<CudaLlamaModel>);
static_assert(ArchTraits<CudaLlamaModel>::neuron_site == NeuronSite::gated_product);

namespace {
struct HasDevice {
  boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
    boost::test_tools::assertion_result r(cuda::device_count() > 0);
    r.message() << "no CUDA device";
    return r;
  }
};
double rel(const MatrixF& a, const MatrixF& b) {
  return static_cast<double>((a - b).norm() / std::max(b.norm(), 1e-30f));
}
const std::vector<TokenId> k_tokens{1, 17, 5, 33, 3, 41, 12, 2, 9};

/// The CPU and GPU models agree on one weight set: activations, logits, batched gradients of
/// every layer at mixed positions, interventions, AMIG scores.
void check_against_cpu(const LlamaWeights<float>& w, const std::vector<TokenId>& tokens,
                       const std::string& name) {
  const LlamaModel<float> cpu(w);
  CudaLlamaModel gpu(w);
  const auto tc = cpu.trace(tokens);
  const auto tg = gpu.trace(tokens);
  const int n = static_cast<int>(tokens.size());
  for (int l = 0; l < cpu.num_layers(); ++l)
    BOOST_TEST(rel(tg.activations(l), tc.activations(l)) < 1e-4, name << " activations " << l);
  BOOST_TEST(rel(gpu.logits(tg), cpu.logits(tc)) < 1e-4, name << " logits");
  Rng rng(9);
  std::vector<LayerRequest<float>> reqs;
  for (int l = cpu.num_layers() - 1; l >= 0; --l) {
    const int pos = (l * 3 + 2) % n;
    MatrixF pts = tc.activations(l).row(pos).replicate(3, 1);
    pts.row(1) *= 0.5f;
    pts.row(2) += testing::random_matrix<float>(rng, 1, cpu.ffn_width(), 0.3);
    reqs.push_back({l, pos, pts, TokenId((7 + l) % cpu.vocab_size())});
  }
  const auto want = cpu.layer_gradients(tc, std::span<const LayerRequest<float>>(reqs));
  for (Precision p : {Precision::fp32, Precision::tf32, Precision::bf16}) {
    gpu.set_precision(p);
    const auto got = gpu.layer_gradients(tg, std::span<const LayerRequest<float>>(reqs));
    double wg = 0, wp = 0;
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      wg = std::max(wg, rel(got[i].gradients, want[i].gradients));
      wp = std::max(wp, rel(got[i].probabilities, want[i].probabilities));
    }
    BOOST_TEST_MESSAGE(name << " " << cuda::precision_name(p) << ": gradients " << wg << ", P "
                            << wp);
    const double tol = p == Precision::fp32 ? 1e-4 : 1e-1;
    BOOST_TEST(wg < tol, name << " " << cuda::precision_name(p) << " gradients " << wg);
    BOOST_TEST(wp < tol, name << " " << cuda::precision_name(p) << " probabilities " << wp);
  }
  gpu.set_precision(Precision::fp32);
  std::vector<InterventionPattern> pats(3);
  pats[1].push_back({1, 5, 4, InterventionOp::set, 3.0});
  pats[1].push_back({1, 5, 4, InterventionOp::scale, 0.5});
  pats[2].push_back({0, 7, 2, InterventionOp::scale, 0.0});
  pats[2].push_back({2, 9, n - 1, InterventionOp::scale, 2.0});
  const std::vector<Query> qs{{4, 9}, {n - 1, 11}, {1, 4}};
  const MatrixF pw = cpu.probabilities(tc, pats, qs), pg = gpu.probabilities(tg, pats, qs);
  BOOST_TEST(rel(pg, pw) < 1e-4, name << " interventions " << rel(pg, pw));
  // Several prompts of different lengths in one call: equal to one call per prompt, and to the
  // CPU backend's batched form.
  const std::vector<TokenId> shorter(tokens.begin(), tokens.end() - 3);
  std::vector<TokenId> longer = tokens;
  longer.insert(longer.end(), {4, 8});
  std::vector<InterventionPattern> pats2(2);
  pats2[1].push_back({cpu.num_layers() - 1, 3, n - 4, InterventionOp::scale, 0.0});
  const std::vector<Query> qs2{{n - 4, 6}}, qs3{{n + 1, 5}, {0, 3}}, none;
  const std::vector<InterventionPattern> clean(1);
  const std::vector<ProbabilityRequest> batch{
      {tokens, pats, qs}, {shorter, pats2, qs2}, {longer, clean, qs3}, {shorter, pats2, none}};
  const auto bg = gpu.probabilities(std::span<const ProbabilityRequest>(batch));
  const auto bc = cpu.probabilities(std::span<const ProbabilityRequest>(batch));
  BOOST_TEST_REQUIRE(bg.size() == batch.size());
  for (std::size_t r = 0; r < batch.size(); ++r) {
    const MatrixF one = gpu.probabilities(batch[r].tokens, batch[r].patterns, batch[r].queries);
    BOOST_TEST(bg[r].rows() == one.rows());
    BOOST_TEST(bg[r].cols() == one.cols());
    if (one.size() == 0) continue;
    BOOST_TEST(rel(bg[r], one) < 1e-4, name << " batched request " << r << " " << rel(bg[r], one));
    BOOST_TEST(rel(bg[r], bc[r]) < 1e-4,
               name << " batched vs CPU " << r << " " << rel(bg[r], bc[r]));
  }
  EncodedFact f;
  f.tokens = tokens;
  f.positions = {n - 1};
  f.targets = {9};
  f.replaceable = {0, 1, 2, 3};
  AttributionOptions o;
  o.steps = 6;
  const auto a = attribute(cpu, f, o, 2), b = attribute(gpu, f, o, 2);
  double num = 0, den = 0;
  for (std::size_t l = 0; l < a.scores.shape()[0]; ++l)
    for (std::size_t i = 0; i < a.scores.shape()[1]; ++i) {
      num += (a.scores(l, i) - b.scores(l, i)) * (a.scores(l, i) - b.scores(l, i));
      den += a.scores(l, i) * a.scores(l, i);
    }
  BOOST_TEST(std::sqrt(num / den) < 1e-4, name << " AMIG scores " << std::sqrt(num / den));
}
}  // namespace

BOOST_AUTO_TEST_SUITE(cuda_llama, *boost::unit_test::precondition(HasDevice()))

BOOST_AUTO_TEST_CASE(tiny_checkpoints_match_transformers) {
  for (std::string name : {"llama_tiny", "gemma3_tiny"}) {
    const auto dir = testing::data_dir() / "hf" / name;
    testing::check_hf_parity(CudaLlamaModel::load(dir), testing::read_json(dir / "expected.json"),
                             "cuda " + name);
  }
}

BOOST_AUTO_TEST_CASE(matches_the_cpu_backend_gemma_and_llama_shapes) {
  check_against_cpu(testing::random_llama(true, 3).cast<float>(), k_tokens, "gemma-shaped");
  check_against_cpu(testing::random_llama(false, 4).cast<float>(), k_tokens, "llama-shaped");
}

BOOST_AUTO_TEST_CASE(matches_the_cpu_backend_on_stories260k) {
  const auto path = testing::stories_dir() / "stories260K.bin";
  if (!std::filesystem::exists(path)) {
    BOOST_TEST_MESSAGE("stories260K not found at " << path << ": skipped");
    return;
  }
  check_against_cpu(load_llama2c(path), {1, 403, 407, 261, 378, 410, 8, 300, 75}, "stories260K");
}

BOOST_AUTO_TEST_CASE(gradients_match_finite_differences) {
  const CudaLlamaModel m(testing::random_llama(true, 5).cast<float>());
  const auto t = m.trace(k_tokens);
  Rng rng(2);
  for (int layer : {0, 1}) {
    const MatrixF a = t.activations(layer).row(6);
    const auto g = m.layer_gradients(t, layer, 6, a, 9);
    auto loss = [&](const MatrixD& x) {
      return static_cast<double>(
          m.layer_gradients(t, layer, 6, MatrixF(x.cast<float>()), 9).probabilities[0]);
    };
    const double err =
        testing::gradient_error(loss, a.cast<double>(), g.gradients.cast<double>(), rng, 16, 1e-2);
    BOOST_TEST(err < 2e-2, "layer " << layer << " finite-difference error " << err);
  }
}

// Several facts in one layer_gradients call (cross-fact batching): every row reads its own
// trace's cached keys / values and residual stream, so each request equals the call on its trace
// alone — prompts of different lengths (window 3 on the Gemma shape: keys before the window
// masked per row), requests at every layer and several positions, in one pass and in several
// (k_rows_per_pass); attribute_many equals attribute of each fact; a bad batch is refused.
BOOST_AUTO_TEST_CASE(several_traces_in_one_call_equal_one_call_each) {
  for (const bool gemma : {true, false}) {
    const std::string name = gemma ? "gemma-shaped" : "llama-shaped";
    const CudaLlamaModel m(testing::random_llama(gemma, 7).cast<float>());
    const std::vector<std::vector<TokenId>> prompts{
        k_tokens, {1, 5, 9, 2}, {3, 41, 12, 2, 9, 17, 33, 8, 5, 6, 11}};
    std::vector<CudaLlamaModel::Trace> traces;
    for (const auto& p : prompts) traces.push_back(m.trace(p));
    for (const int rows : {3, 900}) {  // 900 rows a request: one pass each (2048 rows a pass)
      std::vector<std::vector<LayerRequest<float>>> reqs(prompts.size());
      for (std::size_t i = 0; i < prompts.size(); ++i) {
        const int n = static_cast<int>(prompts[i].size());
        for (int l = m.num_layers() - 1; l >= 0; --l) {
          const int pos = (l * 2 + static_cast<int>(i) * 3 + 1) % n;
          MatrixF pts = traces[i].activations(l).row(pos).replicate(rows, 1);
          for (int r = 1; r < rows; ++r) pts.row(r) *= 1.0f - 0.9f * float(r) / float(rows);
          reqs[i].push_back({l, pos, pts, (5 + 7 * l + static_cast<int>(i)) % m.vocab_size()});
        }
      }
      std::vector<TracedRequests<CudaLlamaModel::Trace, float>> batch;
      for (std::size_t i = 0; i < prompts.size(); ++i)
        batch.push_back({&traces[i], std::span<const LayerRequest<float>>(reqs[i])});
      const auto got =
          m.layer_gradients(std::span<const TracedRequests<CudaLlamaModel::Trace, float>>(batch));
      BOOST_REQUIRE(got.size() == prompts.size());
      for (std::size_t i = 0; i < prompts.size(); ++i) {
        const auto want =
            m.layer_gradients(traces[i], std::span<const LayerRequest<float>>(reqs[i]));
        BOOST_REQUIRE(got[i].size() == want.size());
        for (std::size_t j = 0; j < want.size(); ++j) {
          BOOST_TEST(rel(got[i][j].gradients, want[j].gradients) < 1e-4,
                     name << " rows " << rows << " trace " << i << " request " << j);
          BOOST_TEST(rel(got[i][j].probabilities, want[j].probabilities) < 1e-5,
                     name << " rows " << rows << " trace " << i << " request " << j);
        }
      }
    }
    // attribute_many: one call over the facts' traces per answer token, each fact's scores equal
    // to attribute alone; a two-token answer next to one-token answers.
    std::vector<EncodedFact> facts(prompts.size());
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      auto& f = facts[i];
      f.tokens = prompts[i];
      const int n = static_cast<int>(f.tokens.size());
      f.positions = {n - 1};
      f.targets = {static_cast<TokenId>(9 + i)};
      for (int k = 1; k < n - 1; ++k) f.replaceable.push_back(k);
    }
    facts[2].positions = {8, 9};
    facts[2].targets = {5, 6};
    AttributionOptions o;
    o.steps = 8;
    const auto many = attribute_many(m, std::span<const EncodedFact>(facts), o, 2);
    for (std::size_t i = 0; i < facts.size(); ++i) {
      const auto one = attribute(m, facts[i], o, 2);
      double worst = 0, largest = 0;
      for (std::size_t k = 0; k < one.scores.size(); ++k) {
        worst = std::max(worst, std::abs(many[i].scores.data()[k] - one.scores.data()[k]));
        largest = std::max(largest, std::abs(one.scores.data()[k]));
      }
      BOOST_TEST(worst <= 1e-4 * largest,
                 name << " fact " << i << ": " << worst << " of " << largest);
      BOOST_TEST(many[i].completeness.size() == one.completeness.size());
    }
    std::vector<TracedRequests<CudaLlamaModel::Trace, float>> bad{{nullptr, {}}};
    BOOST_TEST(testing::throws_with<ArgumentError>(
        [&] {
          m.layer_gradients(std::span<const TracedRequests<CudaLlamaModel::Trace, float>>(bad));
        },
        {"entry 0", "no trace"}));
  }
}

BOOST_AUTO_TEST_CASE(value_vector_edits_undo_bit_exactly) {
  const auto w = testing::random_llama(true, 6).cast<float>();
  CudaLlamaModel m(w);
  const VectorF v = m.value_vector(1, 5);
  BOOST_TEST(bool(v == VectorF(w.layers[1].w_down.col(5))));
  const VectorF x = v * 3.0f;
  m.set_value_vector(1, 5, x);
  BOOST_TEST(std::memcmp(m.value_vector(1, 5).data(), x.data(), sizeof(float) * 16) == 0);
  m.set_value_vector(1, 5, v);
  BOOST_TEST(std::memcmp(m.value_vector(1, 5).data(), v.data(), sizeof(float) * 16) == 0);
  BOOST_TEST(bool(m.token_embedding(3) == VectorF(w.embed.row(3).transpose())));
  BOOST_TEST(testing::throws_with<ArgumentError>(
      [&] {
        m.trace(std::vector<TokenId>{1, 50});
      },
      {"token id 50"}));
}

BOOST_AUTO_TEST_SUITE_END()
