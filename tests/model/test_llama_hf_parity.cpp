// Parity of the Llama-family backend with Hugging Face transformers on randomly initialised
// LlamaForCausalLM and Gemma3ForCausalLM checkpoints (tools/make_hf_llama_fixtures.py): the
// safetensors loader, logits at every position, and layer_gradients vs torch autograd.
#include <boost/test/unit_test.hpp>

#include "knprobe/model/llama.hpp"
#include "support/hf_parity.hpp"
#include "support/paths.hpp"

using namespace knprobe;

BOOST_AUTO_TEST_SUITE(model_llama_hf_parity)

BOOST_AUTO_TEST_CASE(logits_and_gradients_match_transformers) {
  for (std::string name : {"llama_tiny", "gemma3_tiny"}) {
    const auto dir = testing::data_dir() / "hf" / name;
    testing::check_hf_parity(LlamaModel<float>::load(dir),
                             testing::read_json(dir / "expected.json"), name);
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
  BOOST_TEST(testing::throws_with<ShapeError>(
      [&] { LlamaModel<float>::load(dir.path()); },
      {"model.layers.0.mlp.gate_proj.weight", "[48, 32]", "[40, 32]"}));
}

BOOST_AUTO_TEST_SUITE_END()
