// model/llama_weights.hpp, GGUF side: every metadata value the model uses is range-checked, the
// keys llama.cpp always writes are required, unknown "<arch>." keys are refused (they may change
// the maths, or be a damaged name whose default would be used), and non-finite weights are named.
#include "knprobe/model/llama_weights.hpp"

#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstring>
#include <set>

#include "knprobe/io/hf_config.hpp"
#include "support/paths.hpp"

using namespace knprobe;
using knprobe::testing::throws_with;

namespace {

/// One GGUF metadata entry, encoded.
struct GgufKv {
  std::string bytes;
  static GgufKv head(const std::string& key, std::uint32_t type) {
    GgufKv kv;
    const std::uint64_t n = key.size();
    kv.bytes.append(reinterpret_cast<const char*>(&n), 8);
    kv.bytes += key;
    kv.bytes.append(reinterpret_cast<const char*>(&type), 4);
    return kv;
  }
  template <class T>
  static GgufKv scalar(const std::string& key, std::uint32_t type, T v) {
    auto kv = head(key, type);
    kv.bytes.append(reinterpret_cast<const char*>(&v), sizeof v);
    return kv;
  }
  static GgufKv u32(const std::string& k, std::uint32_t v) { return scalar(k, 4, v); }
  static GgufKv u64(const std::string& k, std::uint64_t v) { return scalar(k, 10, v); }
  static GgufKv f32(const std::string& k, float v) { return scalar(k, 6, v); }
  static GgufKv str(const std::string& k, const std::string& v) {
    auto kv = head(k, 8);
    const std::uint64_t n = v.size();
    kv.bytes.append(reinterpret_cast<const char*>(&n), 8);
    kv.bytes += v;
    return kv;
  }
};

/// A GGUF v3 file with no tensors and these metadata entries.
std::string gguf_metadata(const std::vector<GgufKv>& kvs) {
  std::string b;
  auto put = [&](auto v) { b.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
  put(std::uint32_t(0x46554747u));
  put(std::uint32_t(3));
  put(std::uint64_t(0));
  put(std::uint64_t(kvs.size()));
  for (const auto& kv : kvs) b += kv.bytes;
  b.resize((b.size() + 31) / 32 * 32, '\0');
  return b;
}

/// One tensor of a test GGUF file.
struct GgufTensor {
  std::string name;
  std::vector<std::uint64_t> ne;
  std::uint32_t type;
  std::string data;
};

/// A GGUF v3 file with these metadata entries and tensors (data aligned to 32 bytes).
std::string gguf_file(const std::vector<GgufKv>& kvs, const std::vector<GgufTensor>& tensors) {
  std::string b;
  auto put = [&](auto v) { b.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
  put(std::uint32_t(0x46554747u));
  put(std::uint32_t(3));
  put(std::uint64_t(tensors.size()));
  put(std::uint64_t(kvs.size()));
  for (const auto& kv : kvs) b += kv.bytes;
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    put(std::uint64_t(t.name.size()));
    b += t.name;
    put(std::uint32_t(t.ne.size()));
    for (auto n : t.ne) put(n);
    put(t.type);
    put(offset);
    offset += (t.data.size() + 31) / 32 * 32;
  }
  b.resize((b.size() + 31) / 32 * 32, '\0');
  for (const auto& t : tensors) {
    b += t.data;
    b.resize((b.size() + 31) / 32 * 32, '\0');
  }
  return b;
}

/// The metadata of a small valid "llama" file, with `key` replaced by `kv` (or dropped when kv is
/// empty, or added when absent).
std::vector<GgufKv> llama_kvs(const std::string& key = "", std::optional<GgufKv> kv = {}) {
  std::vector<std::pair<std::string, GgufKv>> base{
      {"general.architecture", GgufKv::str("general.architecture", "llama")},
      {"llama.context_length", GgufKv::u32("llama.context_length", 512)},
      {"llama.embedding_length", GgufKv::u32("llama.embedding_length", 64)},
      {"llama.block_count", GgufKv::u32("llama.block_count", 2)},
      {"llama.feed_forward_length", GgufKv::u32("llama.feed_forward_length", 96)},
      {"llama.attention.head_count", GgufKv::u32("llama.attention.head_count", 4)},
      {"llama.attention.head_count_kv", GgufKv::u32("llama.attention.head_count_kv", 2)},
      {"llama.attention.layer_norm_rms_epsilon",
       GgufKv::f32("llama.attention.layer_norm_rms_epsilon", 1e-5f)},
      {"llama.rope.freq_base", GgufKv::f32("llama.rope.freq_base", 10000.0f)}};
  std::vector<GgufKv> out;
  bool replaced = false;
  for (auto& [k, v] : base) {
    if (k == key) {
      replaced = true;
      if (kv) out.push_back(*kv);
    } else {
      out.push_back(v);
    }
  }
  if (!replaced && kv) out.push_back(*kv);
  return out;
}

/// The metadata of a "gemma3" file of this shape, as llama.cpp's converter writes it (no
/// query_pre_attn_scalar: the format does not carry it).
std::vector<GgufKv> gemma3_kvs(int layers, int hidden, int heads, int kv_heads, int head_dim) {
  return {GgufKv::str("general.architecture", "gemma3"),
          GgufKv::u32("gemma3.context_length", 32768),
          GgufKv::u32("gemma3.embedding_length", hidden),
          GgufKv::u32("gemma3.block_count", layers),
          GgufKv::u32("gemma3.feed_forward_length", 4 * hidden),
          GgufKv::u32("gemma3.attention.head_count", heads),
          GgufKv::u32("gemma3.attention.head_count_kv", kv_heads),
          GgufKv::u32("gemma3.attention.key_length", head_dim),
          GgufKv::u32("gemma3.attention.value_length", head_dim),
          GgufKv::f32("gemma3.attention.layer_norm_rms_epsilon", 1e-6f),
          GgufKv::f32("gemma3.rope.freq_base", 1e6f),
          GgufKv::u32("gemma3.attention.sliding_window", 512)};
}

LlamaSpec spec_of(const std::vector<GgufKv>& kvs) {
  const std::string bytes = gguf_metadata(kvs);
  const io::GgufFile f(std::span(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()),
                       "m.gguf");
  return detail::gguf_llama_spec(f);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(model_llama_weights)

BOOST_AUTO_TEST_CASE(gguf_metadata_is_range_checked) {
  const auto s = spec_of(llama_kvs());
  BOOST_TEST(s.hidden == 64);
  BOOST_TEST(s.head_dim == 16);
  BOOST_TEST(s.context_length == 512);
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    std::string key;
    std::optional<GgufKv> kv;
    std::vector<std::string> words;
  };
  const std::vector<Case> cases{
      {"llama.attention.layer_norm_rms_epsilon",
       GgufKv::f32("llama.attention.layer_norm_rms_epsilon", inf),
       {"m.gguf", "layer_norm_rms_epsilon", "outside"}},
      {"llama.rope.freq_base", GgufKv::f32("llama.rope.freq_base", inf), {"rope.freq_base"}},
      {"llama.embedding_length",
       GgufKv::u64("llama.embedding_length", 4294967328ull),
       {"embedding_length", "4294967328", "outside"}},
      {"llama.block_count", GgufKv::u32("llama.block_count", 0), {"block_count"}},
      {"llama.attention.head_count_kv",
       GgufKv::u32("llama.attention.head_count_kv", 3),
       {"not a multiple"}},
      {"llama.attention.layer_norm_rms_epsilon",
       std::nullopt,
       {"missing metadata key 'llama.attention.layer_norm_rms_epsilon'"}},
      {"llama.context_length", std::nullopt, {"missing metadata key 'llama.context_length'"}},
      // A damaged key name: its default must not be used silently.
      {"llama.rope.freq_base",
       GgufKv::f32("llama.rope.freq_bXse", 5e5f),
       {"llama.rope.freq_bXse", "not known"}},
      {"", GgufKv::str("llama.rope.scaling.type", "yarn"), {"llama.rope.scaling.type"}},
      {"", GgufKv::f32("llama.rope.scaling.factor", 8.0f), {"llama.rope.scaling.factor"}},
      {"", GgufKv::u32("llama.expert_count", 8), {"llama.expert_count"}},
      {"", GgufKv::u32("llama.rope.dimension_count", 8), {"partial rotary"}},
      {"", GgufKv::u32("llama.attention.sliding_window", 0), {"sliding"}},
      {"", GgufKv::u32("tokenizer.ggml.bos_token_id", 1u << 30), {"bos_token_id"}},
  };
  for (const auto& c : cases) {
    bool ok = false;
    try {
      (void)spec_of(llama_kvs(c.key, c.kv));
    } catch (const FormatError& e) {
      ok = true;
      for (const auto& w : c.words) ok = ok && std::string(e.what()).find(w) != std::string::npos;
      BOOST_TEST(ok, c.words.front() << " not named in: " << e.what());
      continue;
    }
    BOOST_TEST(ok, "not refused: " << c.words.front());
  }
}

BOOST_AUTO_TEST_CASE(neutral_and_harmless_keys_of_older_converters_are_accepted) {
  auto kvs = llama_kvs();
  kvs.push_back(GgufKv::str("llama.tensor_data_layout", "Meta AI original pth"));
  kvs.push_back(GgufKv::str("llama.rope.scaling.type", "none"));
  kvs.push_back(GgufKv::f32("llama.rope.scaling.factor", 1.0f));
  kvs.push_back(GgufKv::u32("llama.expert_count", 0));
  BOOST_TEST(spec_of(kvs).hidden == 64);
}

BOOST_AUTO_TEST_CASE(gemma3_sliding_window_must_be_positive) {
  auto kvs = llama_kvs();
  for (auto& kv : kvs)  // rename every llama.* key to gemma3.*
    if (kv.bytes.find("llama.") != std::string::npos) {
      const auto at = kv.bytes.find("llama.");
      std::uint64_t n = 0;
      std::memcpy(&n, kv.bytes.data(), 8);
      kv.bytes.replace(at, 5, "gemma3");
      ++n;
      std::memcpy(kv.bytes.data(), &n, 8);
    }
  kvs[0] = GgufKv::str("general.architecture", "gemma3");
  auto with = kvs;
  with.push_back(GgufKv::u32("gemma3.attention.sliding_window", 512));
  BOOST_TEST(spec_of(with).sliding_window == 512);
  BOOST_TEST(throws_with<FormatError>([&] { (void)spec_of(kvs); },
                                      {"missing metadata key 'gemma3.attention.sliding_window'"}));
  kvs.push_back(GgufKv::u32("gemma3.attention.sliding_window", 0));
  BOOST_TEST(throws_with<FormatError>([&] { (void)spec_of(kvs); }, {"sliding_window", "outside"}));
}

BOOST_AUTO_TEST_CASE(gguf_tensor_types_must_be_consistent) {
  const std::string f16x32(64, '\0'), f32x32(128, '\0');
  auto check = [&](std::vector<GgufTensor> tensors) {
    const std::string bytes = gguf_file(llama_kvs(), tensors);
    const io::GgufFile f(std::span(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()),
                         "t.gguf");
    detail::gguf_check_tensor_types(f);
  };
  BOOST_CHECK_NO_THROW(
      check({{"a", {32, 1}, 1, f16x32}, {"b", {32, 1}, 1, f16x32}, {"n", {32}, 0, f32x32}}));
  // One matrix's type changed from F16 to BF16 (same size): named.
  BOOST_TEST(throws_with<FormatError>(
      [&] {
        check({{"a", {32, 1}, 1, f16x32}, {"b", {32, 1}, 30, f16x32}, {"c", {32, 1}, 1, f16x32}});
      },
      {"t.gguf", "tensor 'b' is BF16 while 2 other 16-bit tensors are F16"}));
  // A norm vector whose F32 type field was changed.
  BOOST_TEST(throws_with<FormatError>(
      [&] {
        check({{"n", {32}, 1, f16x32}});
      },
      {"1-D tensor 'n' has type F16"}));
}

// What "gemma3" means is written once (detail::apply_architecture) for both loaders: a GGUF file
// and a Hugging Face config of the same model give the same spec. The attention scale is
// 1/sqrt(query_pre_attn_scalar); GGUF files do not carry the scalar, and llama.cpp takes head_dim
// except for the 62-layer 27B model (168 = hidden / heads, head_dim 128). The Gemma 3 shapes are
// those of the published configs (270M, 1B, 27B).
BOOST_AUTO_TEST_CASE(gemma3_spec_is_the_same_from_gguf_and_hugging_face) {
  struct Shape {
    int layers, hidden, heads, kv_heads, head_dim, query_pre_attn_scalar;
  };
  for (const Shape& g : {Shape{18, 640, 4, 1, 256, 256}, Shape{26, 1152, 4, 1, 256, 256},
                         Shape{62, 5376, 32, 16, 128, 168}}) {
    const LlamaSpec gg = spec_of(gemma3_kvs(g.layers, g.hidden, g.heads, g.kv_heads, g.head_dim));
    knprobe::testing::TempDir dir;
    const auto cfg = io::read_llama_config(dir.write(
        "config.json",
        "{\"model_type\": \"gemma3_text\", \"hidden_size\": " + std::to_string(g.hidden) +
            ", \"intermediate_size\": " + std::to_string(4 * g.hidden) +
            ", \"num_hidden_layers\": " + std::to_string(g.layers) + ", \"num_attention_heads\": " +
            std::to_string(g.heads) + ", \"num_key_value_heads\": " + std::to_string(g.kv_heads) +
            ", \"head_dim\": " + std::to_string(g.head_dim) +
            ", \"query_pre_attn_scalar\": " + std::to_string(g.query_pre_attn_scalar) +
            ", \"sliding_window\": 512, \"rms_norm_eps\": 1e-6, "
            "\"max_position_embeddings\": 32768, \"vocab_size\": 262144}"));
    const LlamaSpec hf = detail::hf_llama_spec(cfg, "config.json");
    const std::string n = std::to_string(g.layers) + " layers";
    BOOST_TEST((gg.arch == LlamaArch::gemma3));
    BOOST_TEST((hf.arch == LlamaArch::gemma3));
    BOOST_TEST(gg.attention_scale() == 1.0 / std::sqrt(double(g.query_pre_attn_scalar)), n);
    BOOST_TEST(hf.attention_scale() == gg.attention_scale(), n);
    BOOST_TEST(hf.embed_scale == gg.embed_scale, n);
    BOOST_TEST(gg.embed_scale == double(std::sqrt(float(g.hidden))), n);  // float, as both do
    BOOST_TEST((hf.activation == gg.activation && gg.activation == blocks::Activation::gelu_tanh));
    BOOST_TEST((hf.rope_style == gg.rope_style && gg.rope_style == blocks::rope::Style::half));
    BOOST_TEST((hf.qk_norm && gg.qk_norm && hf.sandwich_norms && gg.sandwich_norms));
    BOOST_TEST((!hf.qkv_bias && !gg.qkv_bias));
    BOOST_TEST(hf.sliding == gg.sliding, n);
    BOOST_TEST(gg.sliding.size() == std::size_t(g.layers));
    BOOST_TEST(!gg.sliding[5]);  // every 6th layer is global
    BOOST_TEST(gg.sliding[6]);
    BOOST_TEST(hf.sliding_window == gg.sliding_window);
    BOOST_TEST(hf.rope_theta_local == gg.rope_theta_local);
    BOOST_TEST(hf.rope_theta == gg.rope_theta);
  }
  // A config without the fields gets Gemma3TextConfig's defaults (head_dim 256, scalar 256).
  knprobe::testing::TempDir dir;
  const auto cfg = io::read_llama_config(dir.write(
      "config.json", R"({"model_type": "gemma3_text", "hidden_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 1, "num_hidden_layers": 2, "intermediate_size": 64,
        "vocab_size": 64})"));
  const LlamaSpec hf = detail::hf_llama_spec(cfg, "config.json");
  BOOST_TEST(hf.head_dim == 256);
  BOOST_TEST(hf.attention_scale() == 1.0 / 16);
  BOOST_TEST(hf.sliding_window == 4096);
}

// The tensor-name table: per architecture, the tensors a layer has, their GGUF and Hugging Face
// names (each unique within a layer) and shapes.
BOOST_AUTO_TEST_CASE(layer_tensor_table) {
  LlamaSpec s;
  s.hidden = 8;
  s.ffn = 12;
  s.layers = 2;
  s.heads = 4;
  s.kv_heads = 2;
  s.head_dim = 2;
  auto present = [&](LlamaArch a) {
    detail::apply_architecture(s, a, {});
    std::set<std::string> gguf, hf;
    for (const auto& n : layer_tensor_names)
      if (has_layer_tensor(s, n.role)) {
        BOOST_TEST(gguf.insert(n.gguf).second, n.gguf);
        BOOST_TEST(hf.insert(s.sandwich_norms && n.hf_sandwich ? n.hf_sandwich : n.hf).second,
                   n.hf);
      }
    return gguf;
  };
  BOOST_TEST(present(LlamaArch::llama).size() == 9u);
  BOOST_TEST(present(LlamaArch::qwen2).count("attn_q.bias") == 1u);
  BOOST_TEST(present(LlamaArch::qwen3).count("attn_k_norm.weight") == 1u);
  const auto g = present(LlamaArch::gemma3);
  BOOST_TEST(g.size() == 13u);
  BOOST_TEST(g.count("post_ffw_norm.weight") == 1u);
  BOOST_TEST(g.count("attn_q.bias") == 0u);
  BOOST_TEST((layer_tensor_shape(s, LayerTensor::wq) == std::pair<Index, Index>{8, 8}));
  BOOST_TEST((layer_tensor_shape(s, LayerTensor::wk) == std::pair<Index, Index>{4, 8}));
  BOOST_TEST((layer_tensor_shape(s, LayerTensor::w_down) == std::pair<Index, Index>{8, 12}));
  BOOST_TEST((layer_tensor_shape(s, LayerTensor::q_norm) == std::pair<Index, Index>{2, 0}));
  BOOST_TEST(std::string(layer_tensor_name(LayerTensor::ffn_norm).hf_sandwich) ==
             "pre_feedforward_layernorm.weight");
}

BOOST_AUTO_TEST_SUITE_END()
