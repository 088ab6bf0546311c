// BERT backend: parity with Hugging Face transformers (tiny random BertForMaskedLM and the real
// bert-base-multilingual-cased configuration with a reduced vocabulary and hash-defined weights,
// tools/make_hf_dense_fixtures.py) and load errors. The contract's properties (gradients vs finite
// differences, interventions reaching every position, value vectors, bad arguments) are in the
// conformance suite, test_conformance.cpp.
#include "knprobe/model/bert.hpp"

#include <boost/test/unit_test.hpp>

#include "support/hash_checkpoint.hpp"
#include "support/hf_parity.hpp"
#include "support/paths.hpp"

using namespace knprobe;

KNPROBE_ASSERT_PROBEABLE(BertModel<float>);
KNPROBE_ASSERT_PROBEABLE(BertModel<double>);
static_assert(ArchTraits<BertModel<float>>::objective == Objective::masked_lm);
// A member added to the layer weights must be added to detail::for_each_bert_tensor too (casts and
// validation go through it).
static_assert(sizeof(BertLayerWeights<float>) ==
              6 * sizeof(Matrix<float>) + 10 * sizeof(Vector<float>));

namespace {
std::filesystem::path tiny() {
  return testing::data_dir() / "hf" / "bert_tiny";
}

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
  // (Out-of-range layers, positions, ids and shapes: the conformance suite.)
  const auto m = BertModel<float>::load(tiny());
  BOOST_TEST(throws_with<ArgumentError>([&] { m.trace(std::vector<TokenId>(33, 1)); },
                                        {"max_position_embeddings"}));
}

BOOST_AUTO_TEST_CASE(hand_built_weights_of_the_wrong_shape_are_named) {
  using testing::throws_with;
  const auto good = load_bert_safetensors(tiny());
  // Every tensor survives float → double → float exactly (the cast visits each one).
  const auto back = good.cast<double>().cast<float>();
  int visited = 0;
  detail::for_each_bert_tensor(
      good.config, good.layers.size(),
      [&](const std::string& name, Index rows, Index cols, const auto& a, const auto& b) {
        ++visited;
        BOOST_TEST_CONTEXT(name) {
          BOOST_TEST(a.rows() == rows);
          BOOST_TEST(a.cols() == cols);
          BOOST_TEST((a.array() == b.array()).all());
        }
      },
      good, back);
  BOOST_TEST(visited == 10 + 16 * good.config.num_hidden_layers);
  {
    auto w = good;  // a hand-built layer with a transposed FFN input
    w.layers[1].w_in.transposeInPlace();
    BOOST_TEST(throws_with<ShapeError>([&] { BertModel<float>{w}; },
                                       {"bert encoder.layer.1.intermediate.dense.weight"}));
  }
  {
    auto w = good;  // the MLM transform's LayerNorm one entry short
    w.ln_t_b.conservativeResize(w.ln_t_b.size() - 1);
    BOOST_TEST(throws_with<ShapeError>([&] { BertModel<float>{w}; },
                                       {"bert cls.predictions.transform.LayerNorm.bias"}));
  }
  {
    auto w = good;
    w.config.num_attention_heads = 0;
    BOOST_TEST(throws_with<ShapeError>([&] { BertModel<float>{w}; }, {"invalid config"}));
  }
  {
    auto w = good;
    w.config.hidden_act = "relu";
    BOOST_TEST(throws_with<FormatError>([&] { BertModel<float>{w}; }, {"relu"}));
  }
  BOOST_CHECK_NO_THROW(BertModel<float>{good});
}

BOOST_AUTO_TEST_SUITE_END()
