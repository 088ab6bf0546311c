// Parity of the Llama-family backend with Hugging Face transformers on randomly initialised
// LlamaForCausalLM and Gemma3ForCausalLM checkpoints (tools/make_hf_llama_fixtures.py): the
// safetensors loader, logits at every position, and layer_gradients vs torch autograd.
#include <boost/test/unit_test.hpp>

#include "knprobe/model/llama.hpp"
#include "knprobe/tokenize/load.hpp"
#include "support/hf_parity.hpp"
#include "support/paths.hpp"

using namespace knprobe;

BOOST_AUTO_TEST_SUITE(model_llama_hf_parity)

BOOST_AUTO_TEST_CASE(logits_and_gradients_match_transformers) {
  for (std::string name :
       {"llama_tiny", "gemma3_tiny", "llama3_tiny", "qwen2_tiny", "qwen3_tiny", "mistral_tiny"}) {
    const auto dir = testing::data_dir() / "hf" / name;
    testing::check_hf_parity(LlamaModel<float>::load(dir),
                             testing::read_json(dir / "expected.json"), name);
  }
}

// The same weights written as llama.cpp's converter lays out a GGUF file (llama: wq / wk permuted
// for interleaved RoPE and the Llama 3 frequency factors in rope_freqs.weight; qwen2: biases;
// qwen3: q / k norms, key_length): the GGUF loader gives transformers' logits and gradients too,
// dequantized and with the weights left in the file's blocks.
BOOST_AUTO_TEST_CASE(gguf_files_of_llama3_qwen2_qwen3_match_transformers) {
  for (std::string name : {"llama3_tiny", "qwen2_tiny", "qwen3_tiny"}) {
    const auto dir = testing::data_dir() / "hf" / name;
    const auto exp = testing::read_json(dir / "expected.json");
    const auto f = std::make_shared<const io::GgufFile>(dir / "model.gguf");
    const LlamaModel<float> dense(load_llama_gguf(*f));
    testing::check_hf_parity(dense, exp, name + " (GGUF)");
    testing::check_hf_parity(QuantizedLlamaModel(load_llama_gguf_quantized(f)), exp,
                             name + " (GGUF, quantized storage)");
    const auto& s = dense.spec();
    BOOST_TEST(s.rope_freq_factors.size() == (name == "llama3_tiny" ? 4u : 0u));
    BOOST_TEST(s.qkv_bias == (name == "qwen2_tiny"));
    BOOST_TEST(s.qk_norm == (name == "qwen3_tiny"));
  }
}

BOOST_AUTO_TEST_CASE(llama3_frequency_factors_equal_the_converter) {
  // HF config → factors computed here; GGUF → the converter's float32 tensor.
  const auto dir = testing::data_dir() / "hf" / "llama3_tiny";
  const auto hf = LlamaModel<float>::load(dir).spec().rope_freq_factors;
  const auto gg = load_llama_gguf(io::GgufFile(dir / "model.gguf")).spec.rope_freq_factors;
  BOOST_REQUIRE(hf.size() == gg.size());
  for (std::size_t j = 0; j < hf.size(); ++j) BOOST_TEST(std::abs(hf[j] - gg[j]) <= 1e-6 * gg[j]);
  BOOST_TEST(hf[0] == 1.0);  // short wavelengths: kept
  BOOST_TEST(hf[1] > 1.0);   // the interpolated band
  BOOST_TEST(hf[1] < 8.0);
  BOOST_TEST(hf[3] == 8.0);  // long wavelengths: divided by factor
}

BOOST_AUTO_TEST_CASE(settings_that_change_the_maths_are_refused_by_name) {
  testing::TempDir dir;
  const auto src = testing::data_dir() / "hf" / "qwen2_tiny";
  std::string cfg;
  {
    std::ifstream in(src / "config.json");
    cfg.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto with = [&](const std::string& from, const std::string& to) {
    std::string c = cfg;
    const auto at = c.find(from);
    BOOST_REQUIRE(at != std::string::npos);
    c.replace(at, from.size(), to);
    dir.write("config.json", c);
    return dir.path() / "config.json";
  };
  using testing::throws_with;
  BOOST_TEST(throws_with<FormatError>(
      [&] { io::read_llama_config(with("\"rope_type\": \"default\"", "\"rope_type\": \"yarn\"")); },
      {"rope_parameters", "'yarn'", "not implemented"}));
  BOOST_TEST(throws_with<FormatError>(
      [&] {
        io::read_llama_config(
            with("\"use_sliding_window\": false", "\"use_sliding_window\": true"));
      },
      {"use_sliding_window", "not supported"}));
  BOOST_TEST(throws_with<FormatError>(
      [&] { io::read_llama_config(with("\"model_type\": \"qwen2\"", "\"model_type\": \"phi3\"")); },
      {"model_type 'phi3'", "not a Llama-family model"}));
  BOOST_TEST(throws_with<FormatError>(
      [&] { io::read_llama_config(with("\"full_attention\",", "\"sliding_attention\",")); },
      {"layer_types", "'sliding_attention'"}));
  {
    std::ifstream in(testing::data_dir() / "hf" / "llama3_tiny" / "config.json");
    cfg.assign(std::istreambuf_iterator<char>(in), {});
  }
  BOOST_TEST(throws_with<FormatError>([&] { io::read_llama_config(with("\"factor\": 8.0,", "")); },
                                      {"rope_parameters", "lacks 'factor'"}));
  BOOST_TEST(throws_with<FormatError>(
      [&] { io::read_llama_config(with("\"factor\": 8.0,", "\"factor\": 0.5,")); },
      {"llama3 scaling needs factor"}));
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

// A Mistral directory with a SentencePiece-style tokenizer.json (Llama 2 / Mistral 7B's design):
// the ids AutoTokenizer gives on the directory, then transformers' last-position logits.
BOOST_AUTO_TEST_CASE(directory_with_sentencepiece_tokenizer_json_matches_transformers) {
  const auto dir = testing::data_dir() / "hf" / "mistral_spm";
  const auto exp = testing::read_json(dir / "expected.json");
  const auto tok = load_tokenizer_json(dir);
  BOOST_TEST(dynamic_cast<const SentencePieceBpe*>(tok.get()) != nullptr);
  const auto m = LlamaModel<float>::load(dir);
  BOOST_TEST(exp["prompts"].size() >= 4u);
  for (const auto& p : exp["prompts"]) {
    const auto text = p["text"].get<std::string>();
    BOOST_TEST_CONTEXT("prompt '" << text << "'") {
      const auto ids = tok->encode(text);
      BOOST_TEST(ids == p["ids"].get<std::vector<TokenId>>(), boost::test_tools::per_element());
      const auto z = m.logits(m.trace(ids));
      const auto want = p["last_logits"].get<std::vector<double>>();
      BOOST_REQUIRE(static_cast<std::size_t>(z.cols()) == want.size());
      const Index last = z.rows() - 1;
      const double scale = static_cast<double>(z.row(last).cwiseAbs().maxCoeff());
      double worst = 0;
      for (std::size_t v = 0; v < want.size(); ++v)
        worst = std::max(worst, std::abs(double(z(last, Index(v))) - want[v]) / scale);
      BOOST_TEST(worst < 1e-4);
    }
  }
}

// A tensor the backend does not read (a bias it lacks, a renamed norm) is refused by name
// instead of being dropped; so is an untied model without lm_head.weight.
BOOST_AUTO_TEST_CASE(unread_tensors_and_missing_lm_head_are_refused) {
  testing::TempDir dir;
  const auto src = testing::data_dir() / "hf" / "llama_tiny";
  auto slurp = [](const std::filesystem::path& f) {
    std::ifstream in(f, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string st = slurp(src / "model.safetensors"), cfg = slurp(src / "config.json");
  auto write = [&](bool tie, bool rename_head) {
    std::string c = cfg, s = st;
    const std::string untied = "\"tie_word_embeddings\": false";
    const auto at = c.find(untied);
    BOOST_REQUIRE(at != std::string::npos);
    if (tie) c.replace(at, untied.size(), "\"tie_word_embeddings\": true");
    if (rename_head) {  // same length: the header stays valid
      const auto h = s.find("lm_head.weight");
      BOOST_REQUIRE(h != std::string::npos);
      s.replace(h, 14, "lm_head.bias__");
    }
    dir.write("config.json", c);
    dir.write("model.safetensors", s);
  };
  using testing::throws_with;
  write(true, true);  // tied, and a tensor nothing reads
  BOOST_TEST(throws_with<FormatError>([&] { LlamaModel<float>::load(dir.path()); },
                                      {"tensor 'lm_head.bias__'", "not used", "refusing"}));
  write(false, true);  // untied without an output matrix
  BOOST_TEST(throws_with<FormatError>([&] { LlamaModel<float>::load(dir.path()); },
                                      {"tie_word_embeddings is false", "no lm_head.weight"}));
  write(true, false);  // tied: a stored lm_head.weight is ignored, as transformers does
  BOOST_CHECK_NO_THROW(LlamaModel<float>::load(dir.path()));
}

BOOST_AUTO_TEST_SUITE_END()
