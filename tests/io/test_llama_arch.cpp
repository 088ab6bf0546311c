#include "knprobe/io/llama_arch.hpp"

#include <boost/test/unit_test.hpp>
#include <set>
#include <string>

#include "knprobe/io/hf_config.hpp"
#include "support/paths.hpp"

using namespace knprobe;
using knprobe::testing::throws_with;

BOOST_AUTO_TEST_SUITE(io_llama_arch)

// Every architecture has a row, a distinct name that parses back to it, and its HF alias parses
// to it too; GGUF parsing accepts exactly the rows that say gguf.
BOOST_AUTO_TEST_CASE(every_architecture_has_a_row_and_its_names_parse_back) {
  std::set<std::string> names;
  for (const auto a : llama_archs) {
    const auto info = llama_arch_info(a);
    BOOST_TEST_CONTEXT(info.name) {
      BOOST_TEST(std::string(info.name) != "?");
      BOOST_TEST(names.insert(info.name).second);
      BOOST_TEST((parse_llama_arch(info.name) == a));
      BOOST_TEST((parse_llama_arch(info.name, true).has_value() == info.gguf));
      if (info.hf_alias) {
        BOOST_TEST((parse_llama_arch(info.hf_alias) == a));
        BOOST_TEST(!parse_llama_arch(info.hf_alias, true));  // GGUF uses the name only
      }
      BOOST_TEST((info.sliding != SlidingLayers::pattern || info.global_every > 0));
      BOOST_TEST(std::string(arch_name(a)) == info.name);
    }
  }
  BOOST_TEST(names.size() == llama_archs.size());
  BOOST_TEST(!parse_llama_arch("phi3"));
  BOOST_TEST(!parse_llama_arch("mistral", true));  // llama.cpp writes Mistral 7B as "llama"
  BOOST_TEST(llama_arch_names() == "llama, mistral, qwen2, qwen3, gemma3, gemma3_text");
  BOOST_TEST(llama_arch_names(true) == "llama, qwen2, qwen3, gemma3");
}

// The config reader takes each architecture's defaults from its row: a config.json that states
// only the shape gets them, for every architecture.
BOOST_AUTO_TEST_CASE(config_defaults_come_from_the_row) {
  knprobe::testing::TempDir dir;
  for (const auto a : llama_archs) {
    const auto info = llama_arch_info(a);
    BOOST_TEST_CONTEXT(info.name) {
      const auto p = dir.write(std::string(info.name) + ".json",
                               std::string(R"({"model_type": ")") + info.name +
                                   R"(", "hidden_size": 64, "intermediate_size": 96,
        "num_hidden_layers": 7, "num_attention_heads": 4, "vocab_size": 300})");
      const auto c = io::read_llama_config(p);
      BOOST_TEST(c.hidden_act == info.hf.hidden_act);
      BOOST_TEST(c.rope_theta == info.hf.rope_theta);
      BOOST_TEST(c.tie_word_embeddings == info.hf.tie_word_embeddings);
      BOOST_TEST(c.head_dim == info.hf.head_dim);
      BOOST_TEST(c.sliding_window == info.hf.sliding_window);
      if (info.sliding == SlidingLayers::pattern) {
        BOOST_REQUIRE(c.layer_types.size() == 7u);
        for (int i = 0; i < 7; ++i)
          BOOST_TEST((c.layer_types[i] == "full_attention") == ((i + 1) % info.global_every == 0));
      } else {
        BOOST_TEST(c.layer_types.empty());
      }
    }
  }
  // Qwen's use_sliding_window and a per-layer pattern are refused where not implemented
  const auto p = dir.write("qwen3_sliding.json", R"({"model_type": "qwen3", "hidden_size": 64,
    "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 300,
    "use_sliding_window": true})");
  BOOST_TEST(throws_with<FormatError>([&] { io::read_llama_config(p); },
                                      {"use_sliding_window", "sliding-window attention"}));
  // transformers' LlamaConfig has no such field (it would ignore it), so a llama config loads
  const auto l = dir.write("llama_sliding.json", R"({"model_type": "llama", "hidden_size": 64,
    "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 300,
    "use_sliding_window": true})");
  BOOST_TEST(io::read_llama_config(l).sliding_window == 0);
  const auto q = dir.write("llama_types.json", R"({"model_type": "llama", "hidden_size": 64,
    "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 300,
    "layer_types": ["sliding_attention", "full_attention"]})");
  BOOST_TEST(throws_with<FormatError>([&] { io::read_llama_config(q); },
                                      {"layer_types", "not implemented for llama"}));
}

BOOST_AUTO_TEST_SUITE_END()
