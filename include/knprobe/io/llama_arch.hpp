#pragma once
// The architectures of the Llama-family backend, one row each: the names GGUF and Hugging Face
// give an architecture, the config.json defaults transformers assumes for it, and the conventions
// of its checkpoints that a loader must know (permuted q / k rows, zero-centred norm weights,
// which sliding-window and RoPE settings it may state). The maths an architecture implies
// (activation, q / k norms, biases, sandwich norms, scales) is written once, in
// detail::apply_architecture (model/llama_weights.hpp). Adding an architecture: an enumerator
// (also listed in llama_archs), its row in llama_arch_info, its case in apply_architecture — and
// layer functions only if its layers compute something new.

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace knprobe {

/// The architectures of the Llama-family backend.
enum class LlamaArch { llama, mistral, qwen2, qwen3, gemma3 };

/// Every LlamaArch, in declaration order.
inline constexpr std::array<LlamaArch, 5> llama_archs{
    LlamaArch::llama, LlamaArch::mistral, LlamaArch::qwen2, LlamaArch::qwen3, LlamaArch::gemma3};

/// Which layers use sliding-window attention.
enum class SlidingLayers {
  none,         ///< none (a stated window is refused)
  every_layer,  ///< every layer, when the checkpoint states a window (Mistral)
  pattern       ///< per layer (HF layer_types); unstated: every `global_every`-th layer global
};

/// config.json defaults of the architecture's transformers config class, where they differ from
/// LlamaConfig's (which are LlamaConfig's of transformers).
struct LlamaHfDefaults {
  const char* hidden_act = "silu";
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  int bos_token_id = 1, eos_token_id = 2;
  int head_dim = 0;                    ///< 0 = hidden_size / num_attention_heads
  double query_pre_attn_scalar = 0.0;  ///< 0 = head_dim
  int sliding_window = 0;
};

/// What one architecture's checkpoints say and leave unsaid.
struct LlamaArchInfo {
  const char* name;                ///< GGUF general.architecture and HF model_type
  const char* hf_alias = nullptr;  ///< another model_type naming it ("gemma3_text")
  bool gguf = false;               ///< GGUF files of it are read
  bool gguf_permuted_qk = false;   ///< llama.cpp's converter permutes wq / wk rows for
                                   ///< interleaved RoPE; else rotate-half order (as HF)
  SlidingLayers sliding = SlidingLayers::none;
  int global_every = 0;                ///< SlidingLayers::pattern: the unstated pattern
  bool rope_freq_factors = false;      ///< Llama 3.x RoPE scaling (HF "llama3", GGUF rope_freqs)
  bool rope_per_layer_type = false;    ///< HF rope_parameters per layer type (full / sliding)
  bool always_qkv_bias = false;        ///< q / k / v biases without an attention_bias field
  bool hf_use_sliding_window = false;  ///< its HF config has use_sliding_window (Qwen): refused
                                       ///< unless false (not implemented)
  bool hf_zero_centred_norms = false;  ///< HF stores RMSNorm weights as w − 1 (GGUF as w)
  LlamaHfDefaults hf{};
};

/// The row of `a`.
inline LlamaArchInfo llama_arch_info(LlamaArch a) {
  switch (a) {  // no default: a new architecture without a row is a compiler warning
    case LlamaArch::llama:
      return {.name = "llama", .gguf = true, .gguf_permuted_qk = true, .rope_freq_factors = true};
    case LlamaArch::mistral:  // llama.cpp writes Mistral 7B as "llama"
      return {.name = "mistral", .sliding = SlidingLayers::every_layer};
    case LlamaArch::qwen2:
      return {
          .name = "qwen2", .gguf = true, .always_qkv_bias = true, .hf_use_sliding_window = true};
    case LlamaArch::qwen3:
      return {.name = "qwen3", .gguf = true, .hf_use_sliding_window = true};
    case LlamaArch::gemma3:
      return {.name = "gemma3",
              .hf_alias = "gemma3_text",
              .gguf = true,
              .sliding = SlidingLayers::pattern,
              .global_every = 6,  // llama.cpp's and transformers' default
              .rope_per_layer_type = true,
              .hf_zero_centred_norms = true,
              .hf = {.hidden_act = "gelu_pytorch_tanh",
                     .rope_theta = 1e6,
                     .tie_word_embeddings = true,
                     .bos_token_id = 2,
                     .eos_token_id = 1,
                     .head_dim = 256,
                     .query_pre_attn_scalar = 256,
                     .sliding_window = 4096}};
  }
  return {.name = "?"};
}

/// The architecture's name as GGUF's general.architecture and Hugging Face's model_type spell it.
inline const char* arch_name(LlamaArch a) {
  return llama_arch_info(a).name;
}

/// The architecture a GGUF general.architecture (gguf = true) or a Hugging Face model_type names;
/// nullopt when the backend does not implement it (or does not read its GGUF files).
inline std::optional<LlamaArch> parse_llama_arch(std::string_view name, bool gguf = false) {
  for (const auto a : llama_archs) {
    const auto info = llama_arch_info(a);
    if (gguf && !info.gguf) continue;
    if (name == info.name || (!gguf && info.hf_alias && name == info.hf_alias)) return a;
  }
  return std::nullopt;
}

/// The names parse_llama_arch accepts, for messages: "llama, mistral, ...".
inline std::string llama_arch_names(bool gguf = false) {
  std::string out;
  for (const auto a : llama_archs) {
    const auto info = llama_arch_info(a);
    if (gguf && !info.gguf) continue;
    for (const char* n : {info.name, gguf ? nullptr : info.hf_alias})
      if (n) out += (out.empty() ? "" : ", ") + std::string(n);
  }
  return out;
}

}  // namespace knprobe
