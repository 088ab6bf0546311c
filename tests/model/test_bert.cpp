// BERT backend: parity with Hugging Face transformers (tiny random BertForMaskedLM and the real
// bert-base-multilingual-cased configuration with a reduced vocabulary and hash-defined weights,
// tools/make_hf_dense_fixtures.py), layer_gradients vs finite differences in double (the
// bidirectional recompute), interventions, value vectors and load errors.
#include "knprobe/model/bert.hpp"

#include <boost/test/unit_test.hpp>

#include "support/finite_diff.hpp"
#include "support/hash_checkpoint.hpp"
#include "support/hf_parity.hpp"
#include "support/paths.hpp"

using namespace knprobe;

KNPROBE_ASSERT_PROBEABLE(BertModel<float>);
KNPROBE_ASSERT_PROBEABLE(BertModel<double>);
static_assert(ArchTraits<BertModel<float>>::objective == Objective::masked_lm);

namespace {
std::filesystem::path tiny() {
  return testing::data_dir() / "hf" / "bert_tiny";
}
const std::vector<TokenId> k_tokens{1, 17, 5, 33, 3, 41, 12, 2};

void tiny_with(const testing::TempDir& dir, const nlohmann::json& patch) {
  auto cfg = testing::read_json(tiny() / "config.json");
  cfg.merge_patch(patch);
  dir.write("config.json", cfg.dump());
  std::filesystem::copy_file(tiny() / "model.safetensors", dir.path() / "model.safetensors");
}
}  // namespace

BOOST_AUTO_TEST_SUITE(model_bert)

BOOST_AUTO_TEST_CASE(tiny_checkpoint_matches_transformers) {
  testing::check_hf_parity(BertModel<float>::load(tiny()),
                           testing::read_json(tiny() / "expected.json"), "bert_tiny");
}

BOOST_AUTO_TEST_CASE(real_mbert_configuration_matches_transformers) {
  const auto fixture = testing::data_dir() / "hf" / "mbert_realcfg";
  testing::TempDir dir;
  testing::write_hash_checkpoint(fixture, dir.path());
  const auto m = BertModel<float>::load(dir.path());
  BOOST_TEST(m.num_layers() == 12);
  BOOST_TEST(m.hidden_size() == 768);
  BOOST_TEST(m.ffn_width() == 3072);
  testing::check_hf_parity(m, testing::read_json(fixture / "expected.json"), "mbert real config");
}

BOOST_AUTO_TEST_CASE(layer_gradients_match_finite_differences) {
  const auto m = BertModel<double>::load(tiny());
  const auto t = m.trace(k_tokens);
  Rng rng(5);
  for (int layer : {0, 1, 2})
    for (int pos : {4, 0}) {
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
        BOOST_TEST(err < 1e-6, "layer " << layer << " pos " << pos << " err " << err);
      }
      BOOST_TEST(std::abs(g.probabilities[0] - m.probability(t, pos, target)) < 1e-12);
    }
}

BOOST_AUTO_TEST_CASE(interventions_agree_with_layer_gradients_and_reach_every_position) {
  const auto m = BertModel<double>::load(tiny());
  const auto t = m.trace(k_tokens);
  const int layer = 1, pos = 4;
  std::vector<InterventionPattern> pats(2);
  pats[1].push_back({layer, 5, pos, InterventionOp::set, 3.0});
  pats[1].push_back({layer, 7, pos, InterventionOp::scale, 0.0});
  MatrixD changed = t.acts[layer].row(pos);
  changed(0, 5) = 3.0;
  changed(0, 7) = 0.0;
  const std::vector<Query> qs{{pos, 9}, {1, 11}};
  const MatrixD p = m.probabilities(t, pats, qs);
  for (int q = 0; q < 2; ++q)
    BOOST_TEST(std::abs(p(0, q) - m.probability(t, qs[q].position, qs[q].target)) < 1e-12);
  BOOST_TEST(std::abs(p(1, 0) - m.layer_gradients(t, layer, pos, changed, 9).probabilities[0]) <
             1e-12);
  BOOST_TEST(std::abs(p(1, 1) - p(0, 1)) / p(0, 1) > 1e-6);  // bidirectional: position 1 changes
}

BOOST_AUTO_TEST_CASE(value_vectors_round_trip_bit_exactly) {
  auto m = BertModel<float>::load(tiny());
  const VectorF v = m.value_vector(1, 7);
  BOOST_TEST(v.size() == 32);
  m.set_value_vector(1, 7, VectorF::Zero(32));
  BOOST_TEST(m.value_vector(1, 7).norm() == 0.0f);
  m.set_value_vector(1, 7, v);
  BOOST_TEST(std::memcmp(m.value_vector(1, 7).data(), v.data(), sizeof(float) * 32) == 0);
}

BOOST_AUTO_TEST_CASE(bad_checkpoints_and_arguments_are_named) {
  using testing::throws_with;
  {
    testing::TempDir dir;
    tiny_with(dir, {{"num_hidden_layers", 4}});
    BOOST_TEST(throws_with<FormatError>([&] { BertModel<float>::load(dir.path()); },
                                        {"bert.encoder.layer.3."}));
  }
  {
    testing::TempDir dir;
    tiny_with(dir, {{"intermediate_size", 40}});
    BOOST_TEST(throws_with<ShapeError>(
        [&] { BertModel<float>::load(dir.path()); },
        {"bert.encoder.layer.0.intermediate.dense.weight", "[48, 32]", "[40, 32]"}));
  }
  {
    testing::TempDir dir;
    tiny_with(dir, {{"vocab_size", 65}});
    BOOST_TEST(
        throws_with<ShapeError>([&] { BertModel<float>::load(dir.path()); }, {"word_embeddings"}));
  }
  const auto m = BertModel<float>::load(tiny());
  const auto t = m.trace(k_tokens);
  const MatrixF pts = MatrixF::Zero(1, m.ffn_width());
  BOOST_TEST(throws_with<ArgumentError>([&] { m.layer_gradients(t, 3, 0, pts, 1); }, {"layer 3"}));
  BOOST_TEST(
      throws_with<ArgumentError>([&] { m.layer_gradients(t, 0, 8, pts, 1); }, {"position 8"}));
  BOOST_TEST(
      throws_with<ArgumentError>([&] { m.layer_gradients(t, 0, 0, pts, 64); }, {"token id 64"}));
  BOOST_TEST(throws_with<ShapeError>([&] { m.layer_gradients(t, 0, 0, MatrixF::Zero(1, 3), 1); },
                                     {"points"}));
  BOOST_TEST(throws_with<ArgumentError>([&] { m.trace(std::vector<TokenId>(33, 1)); },
                                        {"max_position_embeddings"}));
}

BOOST_AUTO_TEST_SUITE_END()
