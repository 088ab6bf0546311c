// GPT-2 backend: parity with Hugging Face transformers (tiny random checkpoint and the real gpt2
// configuration with hash-defined weights, tools/make_hf_dense_fixtures.py), layer_gradients vs
// finite differences in double at both neuron sites, interventions, value vectors and load errors.
#include "knprobe/model/gpt2.hpp"

#include <boost/test/unit_test.hpp>

#include "support/finite_diff.hpp"
#include "support/hash_checkpoint.hpp"
#include "support/hf_parity.hpp"
#include "support/paths.hpp"

using namespace knprobe;

KNPROBE_ASSERT_PROBEABLE(Gpt2Model<float>);
KNPROBE_ASSERT_PROBEABLE(Gpt2Model<double>);
KNPROBE_ASSERT_PROBEABLE(Gpt2Model<float, NeuronSite::pre_activation>);
static_assert(ArchTraits<Gpt2Model<float, NeuronSite::pre_activation>>::neuron_site ==
              NeuronSite::pre_activation);
static_assert(HasBatchedLayerGradients<Gpt2Model<float>>);

namespace {
std::filesystem::path gpt2_tiny() {
  return testing::data_dir() / "hf" / "gpt2_tiny";
}
const std::vector<TokenId> k_gpt2_tokens{1, 17, 5, 33, 3, 41, 12, 2};

/// Copies the tiny fixture into `dir` with config.json fields overridden.
void gpt2_tiny_with(const testing::TempDir& dir, const nlohmann::json& patch) {
  auto cfg = testing::read_json(gpt2_tiny() / "config.json");
  cfg.merge_patch(patch);
  dir.write("config.json", cfg.dump());
  std::filesystem::copy_file(gpt2_tiny() / "model.safetensors", dir.path() / "model.safetensors");
}
}  // namespace

BOOST_AUTO_TEST_SUITE(model_gpt2)

BOOST_AUTO_TEST_CASE(tiny_checkpoint_matches_transformers) {
  const auto exp = testing::read_json(gpt2_tiny() / "expected.json");
  testing::check_hf_parity(Gpt2Model<float>::load(gpt2_tiny()), exp, "gpt2_tiny post");
  testing::check_hf_parity(Gpt2Model<float, NeuronSite::pre_activation>::load(gpt2_tiny()), exp,
                           "gpt2_tiny pre", "grad_pre", "activation_pre");
}

BOOST_AUTO_TEST_CASE(real_gpt2_configuration_matches_transformers) {
  const auto fixture = testing::data_dir() / "hf" / "gpt2_realcfg";
  testing::TempDir dir;
  testing::write_hash_checkpoint(fixture, dir.path());
  const auto m = Gpt2Model<float>::load(dir.path());
  BOOST_TEST(m.num_layers() == 12);
  BOOST_TEST(m.ffn_width() == 3072);
  BOOST_TEST(m.vocab_size() == 50257);
  testing::check_hf_parity(m, testing::read_json(fixture / "expected.json"), "gpt2 real config");
}

BOOST_AUTO_TEST_CASE(layer_gradients_match_finite_differences_at_both_sites) {
  auto check = [](const auto& m, const char* site) {
    const auto t = m.trace(k_gpt2_tokens);
    Rng rng(11);
    for (int layer : {0, 2})
      for (int pos : {7, 3}) {
        MatrixD pts(2, m.ffn_width());
        pts.row(0) = t.activations(layer).row(pos);
        pts.row(1) = testing::random_matrix(rng, 1, m.ffn_width());
        const TokenId target = 9;
        const auto g = m.layer_gradients(t, layer, pos, pts, target);
        for (int b = 0; b < 2; ++b) {
          auto loss = [&](const MatrixD& x) {
            return m.layer_gradients(t, layer, pos, x, target).probabilities[0];
          };
          const double err =
              testing::gradient_error(loss, MatrixD(pts.row(b)), g.gradients.row(b), rng, 24, 1e-6);
          BOOST_TEST(err < 1e-6, site << " layer " << layer << " pos " << pos << " err " << err);
        }
        BOOST_TEST(std::abs(g.probabilities[0] - m.probability(t, pos, target)) < 1e-12);
      }
  };
  check(Gpt2Model<double>::load(gpt2_tiny()), "post");
  check(Gpt2Model<double, NeuronSite::pre_activation>::load(gpt2_tiny()), "pre");
}

BOOST_AUTO_TEST_CASE(batched_requests_equal_single_calls) {
  const auto m = Gpt2Model<double>::load(gpt2_tiny());
  const auto t = m.trace(k_gpt2_tokens);
  std::vector<LayerRequest<double>> reqs;
  for (int l = 0; l < 3; ++l)
    reqs.push_back({l, 7 - l, t.acts[l].row(7 - l).replicate(2, 1), TokenId(7 + l)});
  const auto all = m.layer_gradients(t, std::span<const LayerRequest<double>>(reqs));
  for (std::size_t r = 0; r < reqs.size(); ++r) {
    const auto one =
        m.layer_gradients(t, reqs[r].layer, reqs[r].position, reqs[r].points, reqs[r].target);
    BOOST_TEST((all[r].gradients - one.gradients).norm() <= 1e-12 * one.gradients.norm());
    BOOST_TEST(std::abs(all[r].probabilities[1] - one.probabilities[1]) < 1e-15);
  }
}

BOOST_AUTO_TEST_CASE(interventions_agree_with_layer_gradients_and_causality) {
  const auto m = Gpt2Model<double>::load(gpt2_tiny());
  const auto t = m.trace(k_gpt2_tokens);
  const int layer = 1, pos = 4;
  std::vector<InterventionPattern> pats(2);
  pats[1].push_back({layer, 5, pos, InterventionOp::set, 3.0});
  pats[1].push_back({layer, 7, pos, InterventionOp::scale, 0.0});
  MatrixD changed = t.acts[layer].row(pos);
  changed(0, 5) = 3.0;
  changed(0, 7) = 0.0;
  const std::vector<Query> qs{{pos, 9}, {6, 11}, {2, 4}};
  const MatrixD p = m.probabilities(t, pats, qs);
  for (int q = 0; q < 3; ++q)
    BOOST_TEST(std::abs(p(0, q) - m.probability(t, qs[q].position, qs[q].target)) < 1e-12);
  BOOST_TEST(std::abs(p(1, 0) - m.layer_gradients(t, layer, pos, changed, 9).probabilities[0]) <
             1e-12);
  BOOST_TEST(std::abs(p(1, 2) - p(0, 2)) < 1e-15);           // position 2 < 4: unaffected
  BOOST_TEST(std::abs(p(1, 1) - p(0, 1)) / p(0, 1) > 1e-6);  // position 6 sees position 4
}

BOOST_AUTO_TEST_CASE(value_vectors_round_trip_bit_exactly) {
  auto m = Gpt2Model<float>::load(gpt2_tiny());
  const VectorF v = m.value_vector(2, 5);
  BOOST_TEST(v.size() == 32);
  const VectorF w = v * 3.0f;
  m.set_value_vector(2, 5, w);
  BOOST_TEST((m.value_vector(2, 5) - w).norm() == 0.0f);
  m.set_value_vector(2, 5, v);
  BOOST_TEST(std::memcmp(m.value_vector(2, 5).data(), v.data(), sizeof(float) * 32) == 0);
  BOOST_TEST(m.token_embedding(3).size() == 32);
}

BOOST_AUTO_TEST_CASE(bad_checkpoints_and_arguments_are_named) {
  using testing::throws_with;
  {
    testing::TempDir dir;  // config claims 4 layers: layer 3's tensors are missing
    gpt2_tiny_with(dir, {{"n_layer", 4}});
    BOOST_TEST(throws_with<FormatError>([&] { Gpt2Model<float>::load(dir.path()); },
                                        {"transformer.h.3.ln_1.weight"}));
  }
  {
    testing::TempDir dir;  // config's n_inner disagrees with mlp.c_fc
    gpt2_tiny_with(dir, {{"n_inner", 40}});
    BOOST_TEST(
        throws_with<ShapeError>([&] { Gpt2Model<float>::load(dir.path()); },
                                {"transformer.h.0.mlp.c_fc.weight", "[32, 48]", "[32, 40]"}));
  }
  {
    testing::TempDir dir;
    gpt2_tiny_with(dir, {{"activation_function", "relu"}});
    BOOST_TEST(throws_with<FormatError>([&] { Gpt2Model<float>::load(dir.path()); }, {"relu"}));
  }
  const auto m = Gpt2Model<float>::load(gpt2_tiny());
  const auto t = m.trace(k_gpt2_tokens);
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
}

BOOST_AUTO_TEST_SUITE_END()
