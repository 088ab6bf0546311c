#pragma once
// Hugging Face config.json → typed configurations (BERT, GPT-2, Llama, Gemma 3). Missing fields
// take the transformers defaults of that model class; impossible values raise FormatError naming
// the field.

#include <cmath>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "knprobe/core/error.hpp"
#include "knprobe/io/files.hpp"
#include "knprobe/io/json_get.hpp"
#include "knprobe/io/llama_arch.hpp"

namespace knprobe::io {

struct BertConfig {
  int vocab_size = 30522, hidden_size = 768, num_hidden_layers = 12, num_attention_heads = 12,
      intermediate_size = 3072, max_position_embeddings = 512, type_vocab_size = 2;
  double layer_norm_eps = 1e-12;
  std::string hidden_act = "gelu";
  int pad_token_id = 0;
};

struct Gpt2Config {
  int vocab_size = 50257, n_positions = 1024, n_embd = 768, n_layer = 12, n_head = 12;
  int n_inner = 0;  ///< 0 → 4 · n_embd
  double layer_norm_epsilon = 1e-5;
  std::string activation_function = "gelu_new";
  int ffn_width() const { return n_inner > 0 ? n_inner : 4 * n_embd; }
};

/// RoPE scaling of Llama 3.x ("rope_type": "llama3"): angles of long wavelengths are divided by
/// `factor`, short ones kept, and the band between interpolated (METHOD: Llama 3 report).
struct Llama3RopeScaling {
  double factor = 1, low_freq_factor = 1, high_freq_factor = 4;
  int original_max_position_embeddings = 8192;
  /// The divisor f_j of the angle of pair j (θ_j = p · theta^(−2j/R) / f_j), as transformers'
  /// _compute_llama3_parameters and llama.cpp's rope_freqs tensor define it.
  std::vector<double> freq_factors(double theta, int rotary_dim) const {
    std::vector<double> out;
    const double pi = 3.14159265358979323846;
    const double low_wavelen = original_max_position_embeddings / low_freq_factor;
    const double high_wavelen = original_max_position_embeddings / high_freq_factor;
    for (int j = 0; j < rotary_dim / 2; ++j) {
      const double freq = std::pow(theta, -2.0 * j / rotary_dim);
      const double wavelen = 2 * pi / freq;
      if (wavelen < high_wavelen) {
        out.push_back(1.0);
      } else if (wavelen > low_wavelen) {
        out.push_back(factor);
      } else {
        const double smooth = (original_max_position_embeddings / wavelen - low_freq_factor) /
                              (high_freq_factor - low_freq_factor);
        out.push_back(1.0 / ((1 - smooth) / factor + smooth));
      }
    }
    return out;
  }
};

/// Llama-family decoder (Llama 2 / 3, Mistral, Qwen 2 / 3, Gemma 3): the union of what they need.
struct LlamaConfig {
  std::string model_type = "llama";
  int vocab_size = 32000, hidden_size = 4096, intermediate_size = 11008, num_hidden_layers = 32,
      num_attention_heads = 32, num_key_value_heads = 32, head_dim = 0,
      max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6, rope_theta = 10000.0;
  std::string hidden_act = "silu";
  bool tie_word_embeddings = false;
  // Gemma 3 specifics
  double rope_local_base_freq = 10000.0;
  int sliding_window = 0;                ///< 0 = none
  std::vector<std::string> layer_types;  ///< "sliding_attention" / "full_attention" per layer
  double query_pre_attn_scalar = 0.0;    ///< 0 → head_dim
  int bos_token_id = 1, eos_token_id = 2;
  std::optional<Llama3RopeScaling> llama3_rope;  ///< Llama 3.x RoPE scaling, when configured
  int resolved_head_dim() const {
    return head_dim > 0 ? head_dim : hidden_size / num_attention_heads;
  }
};

namespace detail {

/// The JSON object in `file` (a regular file of at most 64 MiB; IoError / FormatError naming it).
inline nlohmann::json read_json(const std::filesystem::path& file) {
  auto j = parse_json(read_file(file, "JSON file", std::uintmax_t(64) << 20), file.string());
  KNPROBE_REQUIRE(j.is_object(), FormatError, file.string(), ": not a JSON object");
  return j;
}

/// Reads j[key] into `out` when present and not null, with the checks of json_get.hpp: integers
/// must be JSON integers within int, numbers finite, booleans true / false. FormatError names
/// the file and the field.
template <class T>
void field(const nlohmann::json& j, const char* key, T& out, const std::string& file) {
  if (!j.contains(key) || j[key].is_null()) return;
  const std::string where = file + ": field '" + key + "'";
  const auto& v = j[key];
  if constexpr (std::is_same_v<T, bool>) {
    out = json_bool(v, where);
  } else if constexpr (std::is_integral_v<T>) {
    out = json_int<T>(v, std::numeric_limits<T>::min(), std::numeric_limits<T>::max(), where);
  } else if constexpr (std::is_floating_point_v<T>) {
    out = static_cast<T>(json_number(v, -std::numeric_limits<double>::max(),
                                     std::numeric_limits<double>::max(), where));
  } else if constexpr (std::is_same_v<T, std::string>) {
    out = json_string(v, where);
  } else {  // std::vector<std::string>
    KNPROBE_REQUIRE(v.is_array(), FormatError, where, ": expected an array of strings");
    out.clear();
    for (const auto& e : v) out.push_back(json_string(e, where));
  }
}

inline void positive(int v, const char* key, const std::string& file) {
  KNPROBE_REQUIRE(v > 0, FormatError, file, ": field '", key, "' must be > 0, got ", v);
}

/// Refuses a config field that would change the model's maths in a way this library does not
/// implement: present with a value other than `neutral` (null counts as absent).
inline void refuse_unless(const nlohmann::json& j, const char* key, const nlohmann::json& neutral,
                          const std::string& file, const char* why) {
  if (!j.contains(key) || j[key].is_null() || j[key] == neutral) return;
  throw FormatError(file + ": field '" + key + "' = " + j[key].dump() + " is not supported (" +
                    why + "); only " + neutral.dump() + " is");
}

/// eps in (0, 0.1) and finite; theta > 0.
inline void check_eps(double eps, const char* key, const std::string& file) {
  KNPROBE_REQUIRE(eps > 0 && eps < 0.1, FormatError, file, ": field '", key,
                  "' must be in (0, 0.1), got ", eps);
}

}  // namespace detail

inline BertConfig read_bert_config(const std::filesystem::path& file) {
  const auto j = detail::read_json(file);
  const std::string f = file.string();
  BertConfig c;
  detail::field(j, "vocab_size", c.vocab_size, f);
  detail::field(j, "hidden_size", c.hidden_size, f);
  detail::field(j, "num_hidden_layers", c.num_hidden_layers, f);
  detail::field(j, "num_attention_heads", c.num_attention_heads, f);
  detail::field(j, "intermediate_size", c.intermediate_size, f);
  detail::field(j, "max_position_embeddings", c.max_position_embeddings, f);
  detail::field(j, "type_vocab_size", c.type_vocab_size, f);
  detail::field(j, "layer_norm_eps", c.layer_norm_eps, f);
  detail::field(j, "hidden_act", c.hidden_act, f);
  detail::field(j, "pad_token_id", c.pad_token_id, f);
  for (auto [v, k] : {std::pair{c.vocab_size, "vocab_size"},
                      {c.hidden_size, "hidden_size"},
                      {c.num_hidden_layers, "num_hidden_layers"},
                      {c.num_attention_heads, "num_attention_heads"},
                      {c.intermediate_size, "intermediate_size"},
                      {c.max_position_embeddings, "max_position_embeddings"},
                      {c.type_vocab_size, "type_vocab_size"}})
    detail::positive(v, k, f);
  KNPROBE_REQUIRE(c.hidden_size % c.num_attention_heads == 0, FormatError, f,
                  ": hidden_size must be a multiple of num_attention_heads");
  detail::check_eps(c.layer_norm_eps, "layer_norm_eps", f);
  KNPROBE_REQUIRE(c.pad_token_id >= 0 && c.pad_token_id < c.vocab_size, FormatError, f,
                  ": field 'pad_token_id' ", c.pad_token_id, " outside [0, vocab_size)");
  detail::refuse_unless(j, "position_embedding_type", "absolute", f,
                        "relative position embeddings are not implemented");
  detail::refuse_unless(j, "is_decoder", false, f, "BERT is used as a masked-LM encoder");
  return c;
}

inline Gpt2Config read_gpt2_config(const std::filesystem::path& file) {
  const auto j = detail::read_json(file);
  const std::string f = file.string();
  Gpt2Config c;
  detail::field(j, "vocab_size", c.vocab_size, f);
  detail::field(j, "n_positions", c.n_positions, f);
  detail::field(j, "n_embd", c.n_embd, f);
  detail::field(j, "n_layer", c.n_layer, f);
  detail::field(j, "n_head", c.n_head, f);
  detail::field(j, "n_inner", c.n_inner, f);
  detail::field(j, "layer_norm_epsilon", c.layer_norm_epsilon, f);
  detail::field(j, "activation_function", c.activation_function, f);
  for (auto [v, k] : {std::pair{c.vocab_size, "vocab_size"},
                      {c.n_positions, "n_positions"},
                      {c.n_embd, "n_embd"},
                      {c.n_layer, "n_layer"},
                      {c.n_head, "n_head"}})
    detail::positive(v, k, f);
  KNPROBE_REQUIRE(c.n_embd % c.n_head == 0, FormatError, f,
                  ": n_embd must be a multiple of n_head");
  KNPROBE_REQUIRE(c.n_inner >= 0, FormatError, f, ": field 'n_inner' must be >= 0, got ",
                  c.n_inner);
  detail::check_eps(c.layer_norm_epsilon, "layer_norm_epsilon", f);
  // transformers GPT2Attention: both change the attention scores; we implement the defaults.
  detail::refuse_unless(j, "scale_attn_by_inverse_layer_idx", false, f,
                        "scores divided by (layer index + 1) are not implemented");
  detail::refuse_unless(j, "scale_attn_weights", true, f,
                        "unscaled attention scores are not implemented");
  detail::refuse_unless(j, "add_cross_attention", false, f, "cross-attention is not implemented");
  return c;
}

namespace detail {

/// RoPE settings from "rope_parameters" (transformers 5; per layer type for Gemma 3) or
/// "rope_scaling" (transformers 4): theta and the scaling type. Only "default" and, outside
/// Gemma, "llama3" are implemented; any other type (linear, dynamic, yarn, longrope, ...) is
/// refused by name.
inline void read_rope(const nlohmann::json& j, const LlamaArchInfo& arch, LlamaConfig& c,
                      const std::string& f) {
  auto one = [&](const nlohmann::json& r, const std::string& where, double& theta,
                 bool allow_llama3) {
    KNPROBE_REQUIRE(r.is_object(), FormatError, f, ": field '", where, "' is not an object");
    field(r, "rope_theta", theta, f);
    refuse_unless(r, "partial_rotary_factor", 1.0, f, "partial rotary embeddings");
    std::string type = "default";
    field(r, "type", type, f);
    field(r, "rope_type", type, f);
    if (type == "default") return;
    KNPROBE_REQUIRE(type == "llama3" && allow_llama3, FormatError, f, ": field '", where,
                    "' has rope_type '", type.substr(0, 32),
                    "', which is not implemented (only default and, for Llama, llama3)");
    Llama3RopeScaling s;
    for (const char* k :
         {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
      KNPROBE_REQUIRE(r.contains(k), FormatError, f, ": field '", where, "' (llama3) lacks '", k,
                      "'");
    field(r, "factor", s.factor, f);
    field(r, "low_freq_factor", s.low_freq_factor, f);
    field(r, "high_freq_factor", s.high_freq_factor, f);
    field(r, "original_max_position_embeddings", s.original_max_position_embeddings, f);
    KNPROBE_REQUIRE(s.factor >= 1 && s.factor <= 1e4 && s.low_freq_factor > 0 &&
                        s.high_freq_factor > s.low_freq_factor &&
                        s.original_max_position_embeddings > 0,
                    FormatError, f, ": field '", where,
                    "': llama3 scaling needs factor in [1, 1e4], 0 < low_freq_factor < "
                    "high_freq_factor and original_max_position_embeddings > 0");
    c.llama3_rope = s;
  };
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    const auto& r = j[key];
    if (arch.rope_per_layer_type && r.is_object() && r.contains("full_attention")) {
      one(r["full_attention"], std::string(key) + ".full_attention", c.rope_theta, false);
      if (r.contains("sliding_attention"))
        one(r["sliding_attention"], std::string(key) + ".sliding_attention", c.rope_local_base_freq,
            false);
    } else {
      one(r, key, c.rope_theta, arch.rope_freq_factors);
    }
  }
}

}  // namespace detail

inline LlamaConfig read_llama_config(const std::filesystem::path& file) {
  const auto j = detail::read_json(file);
  const std::string f = file.string();
  LlamaConfig c;
  detail::field(j, "model_type", c.model_type, f);
  const auto arch_id = parse_llama_arch(c.model_type);
  KNPROBE_REQUIRE(arch_id, FormatError, f, ": model_type '", c.model_type.substr(0, 64),
                  "' is not a Llama-family model this backend implements (", llama_arch_names(),
                  ")");
  const LlamaArchInfo arch = llama_arch_info(*arch_id);
  // The defaults of the architecture's transformers config class
  c.hidden_act = arch.hf.hidden_act;
  c.rope_theta = arch.hf.rope_theta;
  c.tie_word_embeddings = arch.hf.tie_word_embeddings;
  c.bos_token_id = arch.hf.bos_token_id;
  c.eos_token_id = arch.hf.eos_token_id;
  c.head_dim = arch.hf.head_dim;
  c.query_pre_attn_scalar = arch.hf.query_pre_attn_scalar;
  c.sliding_window = arch.hf.sliding_window;
  detail::field(j, "vocab_size", c.vocab_size, f);
  detail::field(j, "hidden_size", c.hidden_size, f);
  detail::field(j, "intermediate_size", c.intermediate_size, f);
  detail::field(j, "num_hidden_layers", c.num_hidden_layers, f);
  detail::field(j, "num_attention_heads", c.num_attention_heads, f);
  c.num_key_value_heads = c.num_attention_heads;
  detail::field(j, "num_key_value_heads", c.num_key_value_heads, f);
  detail::field(j, "head_dim", c.head_dim, f);
  detail::field(j, "max_position_embeddings", c.max_position_embeddings, f);
  detail::field(j, "rms_norm_eps", c.rms_norm_eps, f);
  detail::field(j, "rope_theta", c.rope_theta, f);
  detail::read_rope(j, arch, c, f);
  detail::field(j, "hidden_act", c.hidden_act, f);
  detail::field(j, "hidden_activation", c.hidden_act, f);
  detail::field(j, "tie_word_embeddings", c.tie_word_embeddings, f);
  detail::field(j, "rope_local_base_freq", c.rope_local_base_freq, f);
  if (arch.sliding != SlidingLayers::none) detail::field(j, "sliding_window", c.sliding_window, f);
  detail::field(j, "layer_types", c.layer_types, f);
  detail::field(j, "query_pre_attn_scalar", c.query_pre_attn_scalar, f);
  detail::field(j, "bos_token_id", c.bos_token_id, f);
  if (j.contains("eos_token_id") && j["eos_token_id"].is_array() && !j["eos_token_id"].empty())
    c.eos_token_id = json_int<int>(j["eos_token_id"][0], 0, std::numeric_limits<int>::max(),
                                   f + ": field 'eos_token_id[0]'");  // e.g. [1, 106]: the first
  else
    detail::field(j, "eos_token_id", c.eos_token_id, f);
  for (auto [v, k] : {std::pair{c.vocab_size, "vocab_size"},
                      {c.hidden_size, "hidden_size"},
                      {c.intermediate_size, "intermediate_size"},
                      {c.num_hidden_layers, "num_hidden_layers"},
                      {c.num_attention_heads, "num_attention_heads"},
                      {c.num_key_value_heads, "num_key_value_heads"}})
    detail::positive(v, k, f);
  KNPROBE_REQUIRE(c.num_attention_heads % c.num_key_value_heads == 0, FormatError, f,
                  ": num_attention_heads must be a multiple of num_key_value_heads");
  KNPROBE_REQUIRE(
      c.layer_types.empty() || static_cast<int>(c.layer_types.size()) == c.num_hidden_layers,
      FormatError, f, ": layer_types has ", c.layer_types.size(), " entries for ",
      c.num_hidden_layers, " layers");
  for (const auto& t : c.layer_types)
    KNPROBE_REQUIRE(t == "sliding_attention" || t == "full_attention", FormatError, f,
                    ": field 'layer_types' holds '", t,
                    "' (expected sliding_attention or full_attention)");
  KNPROBE_REQUIRE(c.head_dim >= 0 && c.max_position_embeddings > 0 && c.sliding_window >= 0,
                  FormatError, f,
                  ": head_dim, max_position_embeddings and sliding_window must not be negative");
  detail::check_eps(c.rms_norm_eps, "rms_norm_eps", f);
  KNPROBE_REQUIRE(c.rope_theta > 0 && c.rope_local_base_freq > 0 && c.query_pre_attn_scalar >= 0,
                  FormatError, f,
                  ": rope_theta and rope_local_base_freq must be > 0, query_pre_attn_scalar >= 0");
  KNPROBE_REQUIRE(c.bos_token_id >= 0 && c.bos_token_id < c.vocab_size && c.eos_token_id >= 0 &&
                      c.eos_token_id < c.vocab_size,
                  FormatError, f, ": bos_token_id / eos_token_id outside [0, vocab_size)");
  // Settings that change the maths and are not implemented: refused by name.
  detail::refuse_unless(j, "partial_rotary_factor", 1.0, f, "partial rotary embeddings");
  if (!arch.always_qkv_bias)  // Qwen 2 always has q / k / v biases (and no such field)
    detail::refuse_unless(j, "attention_bias", false, f,
                          "attention biases are implemented for Qwen 2's q / k / v only");
  if (arch.hf_use_sliding_window)
    detail::refuse_unless(j, "use_sliding_window", false, f,
                          "sliding-window attention is not implemented for this architecture");
  detail::refuse_unless(j, "mlp_bias", false, f, "MLP biases are not implemented");
  detail::refuse_unless(j, "attn_logit_softcapping", nullptr, f, "soft-capping is not implemented");
  detail::refuse_unless(j, "final_logit_softcapping", nullptr, f,
                        "soft-capping is not implemented");
  if (arch.sliding != SlidingLayers::pattern)
    for (const auto& t : c.layer_types)
      KNPROBE_REQUIRE(t == "full_attention", FormatError, f, ": field 'layer_types' holds '", t,
                      "': per-layer sliding-window attention is not implemented for ", arch.name);
  if (arch.sliding == SlidingLayers::pattern && c.layer_types.empty())  // every n-th is global
    for (int i = 0; i < c.num_hidden_layers; ++i)
      c.layer_types.push_back((i + 1) % arch.global_every == 0 ? "full_attention"
                                                               : "sliding_attention");
  return c;
}

}  // namespace knprobe::io
