// Parity of the Llama-family backend with Hugging Face transformers on randomly initialised
// LlamaForCausalLM and Gemma3ForCausalLM checkpoints (tools/make_hf_llama_fixtures.py): the
// safetensors loader, logits at every position, and layer_gradients vs torch autograd.
#include <boost/test/unit_test.hpp>

#include "knprobe/model/llama.hpp"
#include "support/paths.hpp"

using namespace knprobe;

BOOST_AUTO_TEST_SUITE(model_llama_hf_parity)

BOOST_AUTO_TEST_CASE(logits_and_gradients_match_transformers) {
  for (std::string name : {"llama_tiny", "gemma3_tiny"}) {
    const auto dir = testing::data_dir() / "hf" / name;
    const auto m = LlamaModel<float>::load(dir);
    const auto exp = testing::read_json(dir / "expected.json");
    const auto ids = exp["ids"].get<std::vector<TokenId>>();
    const auto t = m.trace(ids);
    const MatrixF z = m.logits(t);
    const auto want = exp["logits"].get<std::vector<std::vector<float>>>();
    double worst = 0;
    for (std::size_t p = 0; p < want.size(); ++p) {
      const double scale = z.row(static_cast<Index>(p)).cwiseAbs().maxCoeff();
      for (std::size_t v = 0; v < want[p].size(); ++v)
        worst = std::max(
            worst, std::abs(z(static_cast<Index>(p), static_cast<Index>(v)) - want[p][v]) / scale);
    }
    BOOST_TEST(worst < 1e-4, name << " logits: worst relative difference " << worst);
    for (const auto& pr : exp["pairs"]) {
      const int l = pr["layer"], p = pr["position"];
      const auto act = pr["activation"].get<std::vector<float>>();
      const VectorF a = Eigen::Map<const VectorF>(act.data(), static_cast<Index>(act.size()));
      const VectorF ours = t.acts[l].row(p).transpose();
      BOOST_TEST((ours - a).norm() <= 1e-4 * a.norm(), name << " activation layer " << l);
      const auto g =
          m.layer_gradients(t, l, p, MatrixF(a.transpose()), pr["target"].get<TokenId>());
      const auto gw = pr["grad"].get<std::vector<float>>();
      const VectorF gref = Eigen::Map<const VectorF>(gw.data(), static_cast<Index>(gw.size()));
      const double rel = (g.gradients.row(0).transpose() - gref).norm() / gref.norm();
      BOOST_TEST(rel < 1e-3,
                 name << " layer " << l << " pos " << p << " gradient rel error " << rel);
      BOOST_TEST(std::abs(g.probabilities[0] - pr["p"].get<double>()) <
                 1e-5 * pr["p"].get<double>() + 1e-9);
    }
  }
}

BOOST_AUTO_TEST_CASE(missing_or_misshapen_tensors_are_named) {
  testing::TempDir dir;
  const auto src = testing::data_dir() / "hf" / "llama_tiny";
  std::filesystem::copy_file(src / "config.json", dir.path() / "config.json");
  std::string cfg;
  {
    std::ifstream in(src / "config.json");
    cfg.assign(std::istreambuf_iterator<char>(in), {});
  }
  // Claim 4 layers: layer 3's tensors are missing from the checkpoint.
  const auto at = cfg.find("\"num_hidden_layers\": 3");
  BOOST_REQUIRE(at != std::string::npos);
  cfg.replace(at, 22, "\"num_hidden_layers\": 4");
  dir.write("config.json", cfg);
  std::filesystem::copy_file(src / "model.safetensors", dir.path() / "model.safetensors");
  BOOST_TEST(testing::throws_with<FormatError>([&] { LlamaModel<float>::load(dir.path()); },
                                               {"model.layers.3."}));
  cfg.replace(at, 22, "\"num_hidden_layers\": 3");
  const auto hs = cfg.find("\"intermediate_size\": 48");
  BOOST_REQUIRE(hs != std::string::npos);
  cfg.replace(hs, 23, "\"intermediate_size\": 40");
  dir.write("config.json", cfg);
  BOOST_TEST(testing::throws_with<ShapeError>([&] { LlamaModel<float>::load(dir.path()); },
                                              {"layer 0 ffn gate"}));
}

BOOST_AUTO_TEST_SUITE_END()
