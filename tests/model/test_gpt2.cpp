// GPT-2 backend: parity with Hugging Face transformers (tiny random checkpoint and the real gpt2
// configuration with hash-defined weights, tools/make_hf_dense_fixtures.py) and load errors. The
// contract's properties (gradients vs finite differences at both neuron sites, batching,
// interventions, value vectors, bad arguments) are in the conformance suite, test_conformance.cpp.
#include "knprobe/model/gpt2.hpp"

#include <boost/test/unit_test.hpp>

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
// A member added to the layer weights must be added to detail::for_each_gpt2_tensor too (casts and
// validation go through it).
static_assert(sizeof(Gpt2LayerWeights<float>) ==
              6 * sizeof(Matrix<float>) + 10 * sizeof(Vector<float>));

namespace {
std::filesystem::path gpt2_tiny() {
  return testing::data_dir() / "hf" / "gpt2_tiny";
}

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
  // (Out-of-range layers, positions, ids and shapes: the conformance suite.)
  const auto m = Gpt2Model<float>::load(gpt2_tiny());
  BOOST_TEST(throws_with<ArgumentError>([&] { m.trace(std::vector<TokenId>(33, 1)); },
                                        {"33 tokens", "n_positions"}));
}

BOOST_AUTO_TEST_CASE(hand_built_weights_of_the_wrong_shape_are_named) {
  using testing::throws_with;
  const auto good = load_gpt2_safetensors(gpt2_tiny());
  // Every tensor survives float → double → float exactly (the cast visits each one).
  const auto back = good.cast<double>().cast<float>();
  int visited = 0;
  detail::for_each_gpt2_tensor(
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
  BOOST_TEST(visited == 4 + 16 * good.config.n_layer);
  {
    auto w = good;  // a hand-built layer with a transposed FFN output
    w.layers[1].w_proj.transposeInPlace();
    BOOST_TEST(throws_with<ShapeError>([&] { Gpt2Model<float>{w}; },
                                       {"gpt2 h.1.mlp.c_proj.weight", "expected shape"}));
  }
  {
    auto w = good;  // a bias one entry short
    w.layers[0].bk.conservativeResize(w.layers[0].bk.size() - 1);
    BOOST_TEST(throws_with<ShapeError>([&] { Gpt2Model<float>{w}; },
                                       {"gpt2 h.0.attn.c_attn.bias (k)", "entries"}));
  }
  {
    auto w = good;  // a layer missing
    w.layers.pop_back();
    BOOST_TEST(throws_with<ShapeError>([&] { Gpt2Model<float>{w}; }, {"layers for n_layer"}));
  }
  {
    auto w = good;  // heads that do not divide the width
    w.config.n_head = w.config.n_embd + 1;
    BOOST_TEST(throws_with<ShapeError>([&] { Gpt2Model<float>{w}; }, {"invalid config"}));
  }
  {
    auto w = good;
    w.config.activation_function = "swish";
    BOOST_TEST(throws_with<FormatError>([&] { Gpt2Model<float>{w}; }, {"swish"}));
  }
  BOOST_CHECK_NO_THROW(Gpt2Model<float>{good});
}

BOOST_AUTO_TEST_SUITE_END()
