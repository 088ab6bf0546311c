#include "knprobe/io/hf_config.hpp"

#include <boost/test/unit_test.hpp>

#include "support/paths.hpp"

using namespace knprobe;
using knprobe::testing::throws_with;

BOOST_AUTO_TEST_SUITE(io_hf_config)

BOOST_AUTO_TEST_CASE(gemma3_config_with_defaults) {
  knprobe::testing::TempDir dir;
  const auto p = dir.write("config.json", R"({"model_type": "gemma3_text", "hidden_size": 640,
    "intermediate_size": 2048, "num_hidden_layers": 18, "num_attention_heads": 4,
    "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 262144, "rms_norm_eps": 1e-6,
    "rope_local_base_freq": 10000.0, "sliding_window": 512, "query_pre_attn_scalar": 256,
    "hidden_activation": "gelu_pytorch_tanh", "rope_scaling": null})");
  const auto c = io::read_llama_config(p);
  BOOST_TEST(c.resolved_head_dim() == 256);
  BOOST_TEST(c.rope_theta == 1e6);
  BOOST_TEST(c.tie_word_embeddings);
  BOOST_TEST(c.layer_types.size() == 18u);
  BOOST_TEST(c.layer_types[5] == "full_attention");
  BOOST_TEST(c.layer_types[6] == "sliding_attention");
  BOOST_TEST(c.hidden_act == "gelu_pytorch_tanh");
}

BOOST_AUTO_TEST_CASE(bert_and_gpt2) {
  knprobe::testing::TempDir dir;
  auto b =
      io::read_bert_config(dir.write("b.json", R"({"vocab_size": 119547, "hidden_act": "gelu"})"));
  BOOST_TEST(b.vocab_size == 119547);
  BOOST_TEST(b.intermediate_size == 3072);
  auto g = io::read_gpt2_config(
      dir.write("g.json", R"({"n_inner": null, "n_embd": 2048, "n_head": 16})"));
  BOOST_TEST(g.ffn_width() == 8192);
}

BOOST_AUTO_TEST_CASE(bad_fields_are_named) {
  knprobe::testing::TempDir dir;
  BOOST_TEST(throws_with<FormatError>(
      [&] { io::read_bert_config(dir.write("c.json", R"({"hidden_size": "big"})")); },
      {"c.json", "hidden_size", "expected an integer"}));
  BOOST_TEST(throws_with<FormatError>(
      [&] { io::read_gpt2_config(dir.write("c.json", R"({"n_layer": 0})")); }, {"n_layer", "> 0"}));
  BOOST_TEST(throws_with<FormatError>(
      [&] {
        io::read_llama_config(
            dir.write("c.json", R"({"num_attention_heads": 6, "num_key_value_heads": 4})"));
      },
      {"multiple"}));
  BOOST_TEST(throws_with<FormatError>([&] { io::read_llama_config(dir.write("c.json", "[1]")); },
                                      {"not a JSON object"}));
  BOOST_TEST(throws_with<IoError>([&] { io::read_llama_config(dir.path() / "none.json"); },
                                  {"none.json", "cannot open"}));
}

BOOST_AUTO_TEST_CASE(integers_are_checked_and_unimplemented_settings_refused) {
  knprobe::testing::TempDir dir;
  for (const char* bad :
       {R"({"n_embd": 4294967328})", R"({"n_embd": 32.7})", R"({"n_embd": true})"})
    BOOST_TEST(throws_with<FormatError>([&] { io::read_gpt2_config(dir.write("c.json", bad)); },
                                        {"c.json", "n_embd", "expected an integer"}),
               bad);
  BOOST_TEST(throws_with<FormatError>(
      [&] {
        io::read_gpt2_config(dir.write("c.json", R"({"scale_attn_by_inverse_layer_idx": true})"));
      },
      {"scale_attn_by_inverse_layer_idx", "not supported"}));
  BOOST_TEST(throws_with<FormatError>(
      [&] { io::read_gpt2_config(dir.write("c.json", R"({"scale_attn_weights": false})")); },
      {"scale_attn_weights", "not supported"}));
  BOOST_TEST(throws_with<FormatError>(
      [&] { io::read_gpt2_config(dir.write("c.json", R"({"layer_norm_epsilon": 1e400})")); },
      {"c.json", "1e400"}));
  BOOST_TEST(throws_with<FormatError>(
      [&] {
        io::read_llama_config(
            dir.write("c.json", R"({"rope_scaling": {"type": "llama3", "factor": 8.0}})"));
      },
      {"rope_scaling", "(llama3) lacks 'low_freq_factor'"}));
  BOOST_TEST(throws_with<FormatError>(
      [&] {
        io::read_llama_config(
            dir.write("c.json", R"({"rope_scaling": {"type": "linear", "factor": 8.0}})"));
      },
      {"rope_scaling", "'linear'", "not implemented"}));
  BOOST_TEST(throws_with<FormatError>(
      [&] {
        io::read_llama_config(dir.write(
            "c.json",
            R"({"model_type": "gemma3_text", "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0}}})"));
      },
      {"rope_parameters.full_attention", "'linear'"}));
  BOOST_TEST(throws_with<FormatError>(
      [&] { io::read_llama_config(dir.write("c.json", R"({"rms_norm_eps": 0})")); },
      {"rms_norm_eps", "(0, 0.1)"}));
  BOOST_TEST(throws_with<FormatError>(
      [&] { io::read_llama_config(dir.write("c.json", R"({"eos_token_id": 99999})")); },
      {"eos_token_id"}));
  BOOST_CHECK_NO_THROW(io::read_llama_config(dir.write("c.json", R"({"eos_token_id": [2, 5]})")));
  BOOST_CHECK_NO_THROW(io::read_gpt2_config(dir.write("c.json", R"({"n_inner": null})")));
}

BOOST_AUTO_TEST_SUITE_END()
