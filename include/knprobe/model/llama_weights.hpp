#pragma once
// Weights and architecture facts of the Llama family (Llama 2 / llama2.c, Gemma 3), and their
// loaders: llama2.c checkpoints, GGUF (architectures "llama" and "gemma3"; dequantized to float,
// or kept in their ggml blocks as QuantizedMatrix) and Hugging Face safetensors directories. Norm
// weights are stored in their *effective* form (the factor that multiplies the normalised vector):
// GGUF Gemma files already hold 1 + w, HF Gemma safetensors hold w and get 1 added here, never
// twice (MODELS.md trap 1).

#include <cmath>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "knprobe/core/tensor.hpp"
#include "knprobe/io/gguf.hpp"
#include "knprobe/io/hf_config.hpp"
#include "knprobe/io/llama2c.hpp"
#include "knprobe/io/safetensors.hpp"
#include "knprobe/model/blocks/activation.hpp"
#include "knprobe/model/blocks/quantized_linear.hpp"
#include "knprobe/model/blocks/rope.hpp"
#include "knprobe/model/checkpoint_reader.hpp"

namespace knprobe {

/// Runtime architecture description of one Llama-family checkpoint.
struct LlamaSpec {
  std::string family = "llama";  ///< "llama", "gemma3", "qwen2", "qwen3" or "mistral"
  int vocab_size = 0, hidden = 0, ffn = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0;
  double norm_eps = 1e-5;
  blocks::Activation activation = blocks::Activation::silu;
  blocks::rope::Style rope_style = blocks::rope::Style::half;
  double rope_theta = 10000.0;        ///< global layers
  double rope_theta_local = 10000.0;  ///< sliding-window layers
  std::vector<bool> sliding;          ///< per layer: sliding-window attention
  int sliding_window = 0;
  bool qk_norm = false;                   ///< Gemma 3, Qwen 3: RMSNorm of q and k per head
  bool qkv_bias = false;                  ///< Qwen 2: biases on the q, k and v projections
  std::vector<double> rope_freq_factors;  ///< Llama 3.x: head_dim/2 divisors of the angles
  bool sandwich_norms = false;  ///< Gemma 3: post-attention and post-FFN norms in the branch
  double embed_scale = 1.0;     ///< input embedding multiplier (Gemma: sqrt(hidden))
  double attn_scale = 0.0;      ///< 0 → 1/sqrt(head_dim)
  std::optional<TokenId> bos, eos;
  int context_length = 0;  ///< longest sequence the model was trained for (0 = not stated)

  double attention_scale() const {
    return attn_scale > 0 ? attn_scale : 1.0 / std::sqrt(double(head_dim));
  }
  double theta(int layer) const { return is_sliding(layer) ? rope_theta_local : rope_theta; }
  bool is_sliding(int layer) const {
    return sliding_window > 0 && !sliding.empty() && sliding[static_cast<std::size_t>(layer)];
  }
};

/// One layer's weights. `W` is the storage of the weight matrices: dense `Matrix<T>` (default) or
/// `QuantizedMatrix` (ggml blocks, T = float); norm weights are always dense vectors.
template <class T, class W = Matrix<T>>
struct LlamaLayerWeights {
  Vector<T> attn_norm;       ///< [d]
  W wq, wk, wv, wo;          ///< [H·hd × d], [Hkv·hd × d] ×2, [d × H·hd]
  Vector<T> bq, bk, bv;      ///< [H·hd], [Hkv·hd] ×2 (qkv_bias only)
  Vector<T> q_norm, k_norm;  ///< [hd] (qk_norm only)
  Vector<T> post_attn_norm;  ///< [d] (sandwich only)
  Vector<T> ffn_norm;        ///< [d]
  W w_gate, w_up, w_down;    ///< [ffn × d], [ffn × d], [d × ffn]
  Vector<T> post_ffn_norm;   ///< [d] (sandwich only)
};

template <class T, class W = Matrix<T>>
struct LlamaWeights {
  LlamaSpec spec;
  W embed;                   ///< [V × d], unscaled
  std::optional<W> lm_head;  ///< [V × d]; absent = tied to embed
  Vector<T> final_norm;      ///< [d]
  std::vector<LlamaLayerWeights<T, W>> layers;

  const W& head() const { return lm_head ? *lm_head : embed; }

  /// The same weights with every matrix passed through `matrix` (→ W2) and every norm vector
  /// cast to U.
  template <class U, class W2, class F>
  LlamaWeights<U, W2> convert(F&& matrix) const {
    const auto vec = [](const Vector<T>& v) { return Vector<U>(v.template cast<U>()); };
    LlamaWeights<U, W2> w;
    w.spec = spec;
    w.embed = matrix(embed);
    if (lm_head) w.lm_head = matrix(*lm_head);
    w.final_norm = vec(final_norm);
    for (const auto& l : layers) {
      LlamaLayerWeights<U, W2> o;
      o.attn_norm = vec(l.attn_norm);
      o.wq = matrix(l.wq);
      o.wk = matrix(l.wk);
      o.wv = matrix(l.wv);
      o.wo = matrix(l.wo);
      o.bq = vec(l.bq);
      o.bk = vec(l.bk);
      o.bv = vec(l.bv);
      o.q_norm = vec(l.q_norm);
      o.k_norm = vec(l.k_norm);
      o.post_attn_norm = vec(l.post_attn_norm);
      o.ffn_norm = vec(l.ffn_norm);
      o.w_gate = matrix(l.w_gate);
      o.w_up = matrix(l.w_up);
      o.w_down = matrix(l.w_down);
      o.post_ffn_norm = vec(l.post_ffn_norm);
      w.layers.push_back(std::move(o));
    }
    return w;
  }

  /// The same weights in another scalar type (tests run the model in double).
  template <class U>
  LlamaWeights<U> cast() const requires std::is_same_v<W, Matrix<T>> {
    return convert<U, Matrix<U>>(
        [](const Matrix<T>& m) { return Matrix<U>(m.template cast<U>()); });
  }

  /// The same weights with every matrix stored as F32 blocks of a QuantizedMatrix (for
  /// checkpoints that are not GGUF files).
  LlamaWeights<float, QuantizedMatrix> to_quantized_storage()
      const requires std::is_same_v<W, MatrixF> {
    return convert<float, QuantizedMatrix>(
        [](const MatrixF& m) { return QuantizedMatrix::from_dense(m); });
  }

  /// Throws ShapeError naming the first tensor whose shape disagrees with `spec`.
  void validate() const {
    const auto& s = spec;
    KNPROBE_REQUIRE(s.layers > 0 && s.hidden > 0 && s.ffn > 0 && s.heads > 0 && s.kv_heads > 0 &&
                        s.head_dim > 0 && s.vocab_size > 0 && s.heads % s.kv_heads == 0,
                    ShapeError, "llama: invalid spec (layers ", s.layers, ", hidden ", s.hidden,
                    ", heads ", s.heads, "/", s.kv_heads, ")");
    KNPROBE_REQUIRE(static_cast<int>(layers.size()) == s.layers, ShapeError,
                    "llama: ", layers.size(), " layers loaded, spec says ", s.layers);
    const Index d = s.hidden, q = Index(s.heads) * s.head_dim, kv = Index(s.kv_heads) * s.head_dim;
    detail::require_shape(embed, s.vocab_size, d, "token embedding");
    if (lm_head) detail::require_shape(*lm_head, s.vocab_size, d, "output head");
    detail::require_size(final_norm, d, "final norm");
    KNPROBE_REQUIRE(s.rope_freq_factors.empty() ||
                        static_cast<int>(s.rope_freq_factors.size()) * 2 == s.head_dim,
                    ShapeError, "llama: ", s.rope_freq_factors.size(),
                    " RoPE frequency factors for head_dim ", s.head_dim);
    for (double f : s.rope_freq_factors)
      KNPROBE_REQUIRE(std::isfinite(f) && f > 0, FormatError, "llama: RoPE frequency factor ", f,
                      " is not finite and > 0");
    for (std::size_t i = 0; i < layers.size(); ++i) {
      const auto& l = layers[i];
      const std::string p = "layer " + std::to_string(i) + " ";
      detail::require_size(l.attn_norm, d, (p + "attention norm").c_str());
      detail::require_shape(l.wq, q, d, (p + "wq").c_str());
      detail::require_shape(l.wk, kv, d, (p + "wk").c_str());
      detail::require_shape(l.wv, kv, d, (p + "wv").c_str());
      detail::require_shape(l.wo, d, q, (p + "wo").c_str());
      detail::require_size(l.ffn_norm, d, (p + "ffn norm").c_str());
      detail::require_shape(l.w_gate, s.ffn, d, (p + "ffn gate").c_str());
      detail::require_shape(l.w_up, s.ffn, d, (p + "ffn up").c_str());
      detail::require_shape(l.w_down, d, s.ffn, (p + "ffn down").c_str());
      if (s.qkv_bias) {
        detail::require_size(l.bq, q, (p + "q bias").c_str());
        detail::require_size(l.bk, kv, (p + "k bias").c_str());
        detail::require_size(l.bv, kv, (p + "v bias").c_str());
      }
      if (s.qk_norm) {
        detail::require_size(l.q_norm, s.head_dim, (p + "q norm").c_str());
        detail::require_size(l.k_norm, s.head_dim, (p + "k norm").c_str());
      }
      if (s.sandwich_norms) {
        detail::require_size(l.post_attn_norm, d, (p + "post-attention norm").c_str());
        detail::require_size(l.post_ffn_norm, d, (p + "post-ffn norm").c_str());
      }
    }
  }
};

namespace detail {

inline Vector<float> as_vector(const MatrixF& m) {
  return Eigen::Map<const Vector<float>>(m.data(), m.size());
}

}  // namespace detail

namespace detail {

/// Architecture facts of a GGUF "llama" / "gemma3" file (vocab_size is set from the embedding).
/// Every value the model uses is range-checked, the keys llama.cpp always writes are required, and
/// a key under "<arch>." that this backend does not know (or that holds other than its neutral
/// value: rope scaling "none", expert_count 0, ...) is refused: it may change the
/// computation (rope scaling, soft-capping, ...) or be a damaged name whose default would be used
/// silently.
inline LlamaSpec gguf_llama_spec(const io::GgufFile& f) {
  const std::string arch = f.get_string("general.architecture");
  KNPROBE_REQUIRE(arch == "gemma3" || arch == "llama" || arch == "qwen2" || arch == "qwen3",
                  FormatError, f.path(), ": architecture '", arch,
                  "' is not supported by the Llama-family backend (llama, gemma3, qwen2, qwen3)");
  const std::string p = arch + ".";
  static const std::set<std::string> known{
      "context_length",           "embedding_length",       "block_count",
      "feed_forward_length",      "attention.head_count",   "attention.head_count_kv",
      "attention.key_length",     "attention.value_length", "attention.layer_norm_rms_epsilon",
      "rope.freq_base",           "rope.dimension_count",   "vocab_size",
      "attention.sliding_window", "rope.freq_base_swa",     "tensor_data_layout"};
  // Keys that change the computation unless they hold their neutral value (older converters
  // write them with it): accepted only then.
  auto neutral = [&](const std::string& k) {
    const std::string key = p + k;
    if (k == "rope.scaling.type") return f.get_string(key) == "none";
    if (k == "rope.scaling.factor") return f.get_double(key) == 1.0;
    if (k == "rope.scaling.original_context_length")
      return !f.has(p + "rope.scaling.type") || f.get_string(p + "rope.scaling.type") == "none";
    if (k == "expert_count" || k == "expert_used_count") return f.get_int_in(key, 0, 1 << 20) == 0;
    if (k == "attention.causal") return f.get_bool(key, true);
    return false;
  };
  for (const auto& key : f.keys())
    if (key.rfind(p, 0) == 0)
      KNPROBE_REQUIRE(known.count(key.substr(p.size())) || neutral(key.substr(p.size())),
                      FormatError, f.path(), ": metadata '", key, "' is not known to the ", arch,
                      " backend (a setting that may change the computation, or a damaged key "
                      "name): refusing rather than ignoring it");
  LlamaSpec s;
  s.family = arch;
  constexpr std::int64_t dim_max = 1 << 20;
  s.context_length = static_cast<int>(f.get_int_in(p + "context_length", 1, 1 << 24));
  s.hidden = static_cast<int>(f.get_int_in(p + "embedding_length", 1, dim_max));
  s.layers = static_cast<int>(f.get_int_in(p + "block_count", 1, 4095));
  s.ffn = static_cast<int>(f.get_int_in(p + "feed_forward_length", 1, dim_max));
  s.heads = static_cast<int>(f.get_int_in(p + "attention.head_count", 1, 4096));
  s.kv_heads = static_cast<int>(f.get_int_in(p + "attention.head_count_kv", 1, s.heads, s.heads));
  KNPROBE_REQUIRE(s.heads % s.kv_heads == 0, FormatError, f.path(), ": head_count ", s.heads,
                  " is not a multiple of head_count_kv ", s.kv_heads);
  KNPROBE_REQUIRE(f.has(p + "attention.key_length") || s.hidden % s.heads == 0, FormatError,
                  f.path(), ": embedding_length ", s.hidden, " is not a multiple of head_count ",
                  s.heads);
  s.head_dim =
      static_cast<int>(f.get_int_in(p + "attention.key_length", 1, 65536, s.hidden / s.heads));
  KNPROBE_REQUIRE(s.head_dim > 0, FormatError, f.path(), ": head dimension is 0");
  KNPROBE_REQUIRE(f.get_int_in(p + "attention.value_length", 1, 65536, s.head_dim) == s.head_dim,
                  FormatError, f.path(), ": attention.value_length differs from key_length (",
                  s.head_dim, "): not implemented");
  KNPROBE_REQUIRE(f.get_int_in(p + "rope.dimension_count", 1, 65536, s.head_dim) == s.head_dim,
                  FormatError, f.path(), ": rope.dimension_count differs from the head dimension (",
                  s.head_dim, "): partial rotary embeddings are not implemented");
  s.norm_eps = f.get_double_in(p + "attention.layer_norm_rms_epsilon", 1e-12, 0.1);
  s.rope_theta = f.get_double_in(p + "rope.freq_base", 1.0, 1e12, 10000.0);
  if (f.has("tokenizer.ggml.bos_token_id"))
    s.bos = static_cast<TokenId>(f.get_int_in("tokenizer.ggml.bos_token_id", 0, (1 << 24) - 1));
  if (f.has("tokenizer.ggml.eos_token_id"))
    s.eos = static_cast<TokenId>(f.get_int_in("tokenizer.ggml.eos_token_id", 0, (1 << 24) - 1));
  if (arch == "gemma3") {
    s.activation = blocks::Activation::gelu_tanh;
    s.rope_style = blocks::rope::Style::half;
    s.rope_theta_local = f.get_double_in(p + "rope.freq_base_swa", 1.0, 1e12, 10000.0);
    s.sliding_window =
        static_cast<int>(f.get_int_in(p + "attention.sliding_window", 1, s.context_length));
    for (int i = 0; i < s.layers; ++i) s.sliding.push_back(i % 6 < 5);  // llama.cpp SWA pattern 6
    s.qk_norm = s.sandwich_norms = true;
    s.embed_scale = std::sqrt(static_cast<double>(s.hidden));
  } else {
    KNPROBE_REQUIRE(!f.has(p + "attention.sliding_window") && !f.has(p + "rope.freq_base_swa"),
                    FormatError, f.path(), ": sliding-window attention is not implemented for ",
                    arch, " files");
    s.activation = blocks::Activation::silu;
    // llama.cpp's converter permutes a llama file's wq / wk rows for interleaved RoPE; Qwen files
    // keep Hugging Face's order and use rotate-half (NEOX).
    s.rope_style = arch == "llama" ? blocks::rope::Style::interleaved : blocks::rope::Style::half;
    s.rope_theta_local = s.rope_theta;
    s.qkv_bias = arch == "qwen2";
    s.qk_norm = arch == "qwen3";
  }
  return s;
}

/// Tensor types as llama.cpp writes them: 1-D tensors (norm weights) in F32, and the 16-bit float
/// matrices of one file all F16 or all BF16. A tensor whose type was changed to another of the
/// same byte size (F16 ↔ BF16) would dequantize to plausible but wrong numbers; it shows here.
inline void gguf_check_tensor_types(const io::GgufFile& f) {
  const auto f32 = static_cast<std::uint32_t>(io::GgmlType::f32);
  const auto f16 = static_cast<std::uint32_t>(io::GgmlType::f16);
  const auto bf16 = static_cast<std::uint32_t>(io::GgmlType::bf16);
  std::size_t n16 = 0, nbf16 = 0;
  for (const auto& t : f.tensors()) {
    KNPROBE_REQUIRE(t.ne.size() != 1 || t.type == f32, FormatError, f.path(), ": 1-D tensor '",
                    t.name, "' has type ", io::ggml_type_info(t.type).name,
                    "; llama.cpp writes vectors as F32 (a changed type field?)");
    n16 += t.type == f16;
    nbf16 += t.type == bf16;
  }
  if (n16 && nbf16) {
    const auto odd = n16 < nbf16 ? f16 : bf16;
    for (const auto& t : f.tensors())
      KNPROBE_REQUIRE(t.type != odd, FormatError, f.path(), ": tensor '", t.name, "' is ",
                      io::ggml_type_info(odd).name, " while ", std::max(n16, nbf16),
                      " other 16-bit tensors are ",
                      io::ggml_type_info(odd == f16 ? bf16 : f16).name, " (a changed type field?)");
  }
}

/// The tensors of a GGUF Llama-family file; `matrix(name)` reads one weight matrix as W.
template <class W, class ReadMatrix>
LlamaWeights<float, W> gguf_llama_weights(const io::GgufFile& f, ReadMatrix&& read_matrix) {
  LlamaWeights<float, W> w;
  w.spec = gguf_llama_spec(f);
  auto& s = w.spec;
  gguf_check_tensor_types(f);
  std::set<std::string> used;  // every tensor of the file must be one the model uses
  auto matrix = [&](const std::string& name) {
    used.insert(name);
    return read_matrix(name);
  };
  auto vector = [&](const std::string& name) {
    used.insert(name);
    return detail::as_vector(f.matrix(name));
  };
  w.embed = matrix("token_embd.weight");
  s.vocab_size = static_cast<int>(w.embed.rows());
  KNPROBE_REQUIRE(f.get_int_in(s.family + ".vocab_size", 1, 1 << 24, s.vocab_size) == s.vocab_size,
                  FormatError, f.path(), ": ", s.family, ".vocab_size differs from the ",
                  s.vocab_size, " rows of token_embd.weight");
  for (const auto id : {s.bos, s.eos})
    KNPROBE_REQUIRE(!id || *id < s.vocab_size, FormatError, f.path(), ": special token id ", *id,
                    " outside the vocabulary of ", s.vocab_size);
  if (f.has_tensor("output.weight")) w.lm_head = matrix("output.weight");
  w.final_norm = vector("output_norm.weight");
  if (f.has_tensor("rope_freqs.weight")) {  // Llama 3.x "llama3" RoPE scaling, as factors
    KNPROBE_REQUIRE(s.family == "llama", FormatError, f.path(), ": rope_freqs.weight in a ",
                    s.family, " file is not implemented");
    const auto v = vector("rope_freqs.weight");
    KNPROBE_REQUIRE(v.size() * 2 == s.head_dim, FormatError, f.path(), ": rope_freqs.weight has ",
                    v.size(), " entries, expected head_dim / 2 = ", s.head_dim / 2);
    for (float x : v)
      KNPROBE_REQUIRE(std::isfinite(x) && x > 0, FormatError, f.path(),
                      ": rope_freqs.weight holds ", x, " (factors must be finite and > 0)");
    s.rope_freq_factors.assign(v.data(), v.data() + v.size());
  }
  for (int i = 0; i < s.layers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    LlamaLayerWeights<float, W> l;
    l.attn_norm = vector(b + "attn_norm.weight");
    l.wq = matrix(b + "attn_q.weight");
    l.wk = matrix(b + "attn_k.weight");
    l.wv = matrix(b + "attn_v.weight");
    l.wo = matrix(b + "attn_output.weight");
    l.ffn_norm = vector(b + "ffn_norm.weight");
    l.w_gate = matrix(b + "ffn_gate.weight");
    l.w_up = matrix(b + "ffn_up.weight");
    l.w_down = matrix(b + "ffn_down.weight");
    if (s.qkv_bias) {
      l.bq = vector(b + "attn_q.bias");
      l.bk = vector(b + "attn_k.bias");
      l.bv = vector(b + "attn_v.bias");
    }
    if (s.qk_norm) {
      l.q_norm = vector(b + "attn_q_norm.weight");
      l.k_norm = vector(b + "attn_k_norm.weight");
    }
    if (s.sandwich_norms) {
      l.post_attn_norm = vector(b + "post_attention_norm.weight");
      l.post_ffn_norm = vector(b + "post_ffw_norm.weight");
    }
    w.layers.push_back(std::move(l));
  }
  for (const auto& t : f.tensors())
    KNPROBE_REQUIRE(used.count(t.name), FormatError, f.path(), ": tensor '", t.name,
                    "' is not used by the ", s.family,
                    " backend (a bias, norm or scaling it does not implement?): refusing rather "
                    "than ignoring it");
  w.validate();
  return w;
}

}  // namespace detail

/// llama.cpp's GGUF "llama" converter permutes wq / wk rows so that interleaved RoPE applies;
/// the "gemma3" converter does not (rotate-half). Reads the architecture from general.architecture.
/// Every weight is dequantized to float32.
inline LlamaWeights<float> load_llama_gguf(const io::GgufFile& f) {
  return detail::gguf_llama_weights<MatrixF>(
      f, [&](const std::string& name) { return f.matrix(name); });
}

/// As load_llama_gguf, with the weight matrices left in the file's ggml blocks (no
/// dequantization; the returned weights keep the file mapped).
inline LlamaWeights<float, QuantizedMatrix> load_llama_gguf_quantized(
    const std::shared_ptr<const io::GgufFile>& f) {
  return detail::gguf_llama_weights<QuantizedMatrix>(
      *f, [&](const std::string& name) { return QuantizedMatrix::from_gguf(f, name); });
}

/// llama.c checkpoint: interleaved RoPE (theta 1e4), RMSNorm eps 1e-5, SwiGLU; BOS 1, EOS 2.
inline LlamaWeights<float> load_llama2c(const std::filesystem::path& path) {
  auto c = io::read_llama2c(path);
  LlamaWeights<float> w;
  auto& s = w.spec;
  s.family = "llama";
  s.vocab_size = c.config.vocab_size;
  s.hidden = c.config.dim;
  s.ffn = c.config.hidden_dim;
  s.layers = c.config.n_layers;
  s.heads = c.config.n_heads;
  s.kv_heads = c.config.n_kv_heads;
  s.head_dim = c.config.head_size();
  s.norm_eps = 1e-5;
  s.context_length = c.config.seq_len;
  s.activation = blocks::Activation::silu;
  s.rope_style = blocks::rope::Style::interleaved;
  s.bos = 1;
  s.eos = 2;
  w.embed = std::move(c.token_embedding);
  if (!c.config.shared_classifier) w.lm_head = std::move(c.wcls);
  w.final_norm = c.rms_final;
  for (int i = 0; i < s.layers; ++i) {
    LlamaLayerWeights<float> l;
    l.attn_norm = c.rms_att[i];
    l.wq = std::move(c.wq[i]);
    l.wk = std::move(c.wk[i]);
    l.wv = std::move(c.wv[i]);
    l.wo = std::move(c.wo[i]);
    l.ffn_norm = c.rms_ffn[i];
    l.w_gate = std::move(c.w1[i]);
    l.w_down = std::move(c.w2[i]);
    l.w_up = std::move(c.w3[i]);
    w.layers.push_back(std::move(l));
  }
  w.validate();
  return w;
}

/// Hugging Face directory (config.json + safetensors) of LlamaForCausalLM (Llama 2 / 3.x),
/// MistralForCausalLM, Qwen2ForCausalLM (q / k / v biases), Qwen3ForCausalLM (q / k RMSNorm) or
/// Gemma3ForCausalLM. Gemma norm weights get their 1 added here (HF stores them zero-centred).
inline LlamaWeights<float> load_llama_safetensors(const std::filesystem::path& dir) {
  const auto cfg = io::read_llama_config(dir / "config.json");
  const io::SafetensorsCheckpoint ck(dir);
  const bool gemma = cfg.model_type.rfind("gemma", 0) == 0;
  LlamaWeights<float> w;
  auto& s = w.spec;
  s.family = gemma ? "gemma3" : cfg.model_type;
  s.vocab_size = cfg.vocab_size;
  s.hidden = cfg.hidden_size;
  s.ffn = cfg.intermediate_size;
  s.layers = cfg.num_hidden_layers;
  s.heads = cfg.num_attention_heads;
  s.kv_heads = cfg.num_key_value_heads;
  s.head_dim = cfg.resolved_head_dim();
  s.norm_eps = cfg.rms_norm_eps;
  s.rope_theta = cfg.rope_theta;
  s.rope_theta_local = gemma ? cfg.rope_local_base_freq : cfg.rope_theta;
  s.rope_style = blocks::rope::Style::half;
  s.bos = cfg.bos_token_id;
  s.eos = cfg.eos_token_id;
  s.context_length = cfg.max_position_embeddings;
  KNPROBE_REQUIRE(cfg.hidden_act == "silu" || cfg.hidden_act == "gelu_pytorch_tanh", FormatError,
                  dir.string(), ": activation '", cfg.hidden_act, "' not supported");
  s.activation =
      cfg.hidden_act == "silu" ? blocks::Activation::silu : blocks::Activation::gelu_tanh;
  if (gemma) {
    s.sliding_window = cfg.sliding_window;
    for (const auto& t : cfg.layer_types) s.sliding.push_back(t == "sliding_attention");
    s.qk_norm = s.sandwich_norms = true;
    // HF casts sqrt(hidden) to the weight dtype; in float32 that is the float of sqrt(hidden).
    s.embed_scale = static_cast<float>(std::sqrt(static_cast<double>(s.hidden)));
    s.attn_scale = cfg.query_pre_attn_scalar > 0 ? 1.0 / std::sqrt(cfg.query_pre_attn_scalar) : 0.0;
  } else if (cfg.model_type == "mistral" && cfg.sliding_window > 0) {
    s.sliding_window = cfg.sliding_window;  // every layer
    s.sliding.assign(static_cast<std::size_t>(s.layers), true);
  }
  s.qkv_bias = cfg.model_type == "qwen2";
  if (cfg.model_type == "qwen3") s.qk_norm = true;
  if (cfg.llama3_rope)
    s.rope_freq_factors = cfg.llama3_rope->freq_factors(s.rope_theta, s.head_dim);
  const detail::CheckpointReader r(ck);
  const Index d = s.hidden, q = Index(s.heads) * s.head_dim, kv = Index(s.kv_heads) * s.head_dim;
  auto vec = [&](const std::string& name, Index n) {
    VectorF v = r.vector(name, n);
    if (gemma) v.array() += 1.0f;
    return v;
  };
  const std::string m = ck.contains("model.embed_tokens.weight") ? "model." : "";
  w.embed = r.matrix(m + "embed_tokens.weight", s.vocab_size, d);
  if (!cfg.tie_word_embeddings) {
    KNPROBE_REQUIRE(ck.contains("lm_head.weight"), FormatError, dir.string(),
                    ": tie_word_embeddings is false but there is no lm_head.weight (transformers "
                    "would start from random output weights)");
    w.lm_head = r.matrix("lm_head.weight", s.vocab_size, d);
  }
  w.final_norm = vec(m + "norm.weight", d);
  for (int i = 0; i < s.layers; ++i) {
    const std::string b = m + "layers." + std::to_string(i) + ".";
    LlamaLayerWeights<float> l;
    l.attn_norm = vec(b + "input_layernorm.weight", d);
    l.wq = r.matrix(b + "self_attn.q_proj.weight", q, d);
    l.wk = r.matrix(b + "self_attn.k_proj.weight", kv, d);
    l.wv = r.matrix(b + "self_attn.v_proj.weight", kv, d);
    l.wo = r.matrix(b + "self_attn.o_proj.weight", d, q);
    if (s.qkv_bias) {
      l.bq = r.vector(b + "self_attn.q_proj.bias", q);
      l.bk = r.vector(b + "self_attn.k_proj.bias", kv);
      l.bv = r.vector(b + "self_attn.v_proj.bias", kv);
    }
    if (cfg.model_type == "qwen3") {  // plain RMSNorm weights (not zero-centred)
      l.q_norm = r.vector(b + "self_attn.q_norm.weight", s.head_dim);
      l.k_norm = r.vector(b + "self_attn.k_norm.weight", s.head_dim);
    }
    l.ffn_norm = vec(
        b + (gemma ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight"), d);
    l.w_gate = r.matrix(b + "mlp.gate_proj.weight", s.ffn, d);
    l.w_up = r.matrix(b + "mlp.up_proj.weight", s.ffn, d);
    l.w_down = r.matrix(b + "mlp.down_proj.weight", d, s.ffn);
    if (gemma) {
      l.q_norm = vec(b + "self_attn.q_norm.weight", s.head_dim);
      l.k_norm = vec(b + "self_attn.k_norm.weight", s.head_dim);
      l.post_attn_norm = vec(b + "post_attention_layernorm.weight", d);
      l.post_ffn_norm = vec(b + "post_feedforward_layernorm.weight", d);
    }
    w.layers.push_back(std::move(l));
  }
  // Buffers transformers recomputes (RoPE inverse frequencies) and an lm_head the config ties to
  // the embedding (transformers ignores it) carry nothing the model lacks.
  r.refuse_unread(s.family, [&](const std::string& n) {
    return n.ends_with("rotary_emb.inv_freq") || (cfg.tie_word_embeddings && n == "lm_head.weight");
  });
  w.validate();
  return w;
}

}  // namespace knprobe
