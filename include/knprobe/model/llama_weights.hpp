#pragma once
// Weights and architecture facts of the Llama family (Llama 2 / llama2.c, Gemma 3), and their
// loaders: llama2.c checkpoints, GGUF (architectures llama, gemma3, qwen2, qwen3; dequantized to
// float, or kept in their ggml blocks as QuantizedMatrix) and Hugging Face safetensors directories.
// Norm weights are stored in their *effective* form (the factor that multiplies the normalised
// vector): GGUF Gemma files already hold 1 + w, HF Gemma safetensors hold w and get 1 added here,
// never twice (docs/MODELS.md trap 1).

#include <array>
#include <cmath>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "knprobe/core/tensor.hpp"
#include "knprobe/io/gguf.hpp"
#include "knprobe/io/hf_config.hpp"
#include "knprobe/io/llama2c.hpp"
#include "knprobe/io/llama_arch.hpp"
#include "knprobe/io/safetensors.hpp"
#include "knprobe/model/blocks/activation.hpp"
#include "knprobe/model/blocks/quantized_linear.hpp"
#include "knprobe/model/blocks/rope.hpp"
#include "knprobe/model/checkpoint_reader.hpp"

namespace knprobe {

/// Runtime architecture description of one Llama-family checkpoint.
struct LlamaSpec {
  LlamaArch arch = LlamaArch::llama;
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

  const char* family() const { return arch_name(arch); }
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

/// The per-layer tensors of the Llama family, one role each (in LlamaLayerWeights' order).
enum class LayerTensor {
  attn_norm,
  wq,
  wk,
  wv,
  wo,
  bq,
  bk,
  bv,
  q_norm,
  k_norm,
  post_attn_norm,
  ffn_norm,
  w_gate,
  w_up,
  w_down,
  post_ffn_norm
};

/// One row of the tensor-name table: a role's name in a GGUF file (after "blk.<i>.") and in a
/// Hugging Face checkpoint (after "[model.]layers.<i>."; Gemma 3's sandwich layout renames the
/// FFN norm), and how error messages name it.
struct LayerTensorName {
  LayerTensor role;
  const char* gguf;
  const char* hf;
  const char* hf_sandwich;  ///< the name in a sandwich-norm (Gemma 3) checkpoint; nullptr = hf
  const char* label;
};

/// The one tensor-name table of the Llama family, indexed by LayerTensor.
inline constexpr std::array<LayerTensorName, 16> layer_tensor_names{{
    {LayerTensor::attn_norm, "attn_norm.weight", "input_layernorm.weight", nullptr,
     "attention norm"},
    {LayerTensor::wq, "attn_q.weight", "self_attn.q_proj.weight", nullptr, "wq"},
    {LayerTensor::wk, "attn_k.weight", "self_attn.k_proj.weight", nullptr, "wk"},
    {LayerTensor::wv, "attn_v.weight", "self_attn.v_proj.weight", nullptr, "wv"},
    {LayerTensor::wo, "attn_output.weight", "self_attn.o_proj.weight", nullptr, "wo"},
    {LayerTensor::bq, "attn_q.bias", "self_attn.q_proj.bias", nullptr, "q bias"},
    {LayerTensor::bk, "attn_k.bias", "self_attn.k_proj.bias", nullptr, "k bias"},
    {LayerTensor::bv, "attn_v.bias", "self_attn.v_proj.bias", nullptr, "v bias"},
    {LayerTensor::q_norm, "attn_q_norm.weight", "self_attn.q_norm.weight", nullptr, "q norm"},
    {LayerTensor::k_norm, "attn_k_norm.weight", "self_attn.k_norm.weight", nullptr, "k norm"},
    {LayerTensor::post_attn_norm, "post_attention_norm.weight", "post_attention_layernorm.weight",
     nullptr, "post-attention norm"},
    {LayerTensor::ffn_norm, "ffn_norm.weight", "post_attention_layernorm.weight",
     "pre_feedforward_layernorm.weight", "ffn norm"},
    {LayerTensor::w_gate, "ffn_gate.weight", "mlp.gate_proj.weight", nullptr, "ffn gate"},
    {LayerTensor::w_up, "ffn_up.weight", "mlp.up_proj.weight", nullptr, "ffn up"},
    {LayerTensor::w_down, "ffn_down.weight", "mlp.down_proj.weight", nullptr, "ffn down"},
    {LayerTensor::post_ffn_norm, "post_ffw_norm.weight", "post_feedforward_layernorm.weight",
     nullptr, "post-ffn norm"},
}};

static_assert(
    [] {
      for (std::size_t i = 0; i < layer_tensor_names.size(); ++i)
        if (layer_tensor_names[i].role != static_cast<LayerTensor>(i)) return false;
      return true;
    }(),
    "layer_tensor_names must list the roles in LayerTensor's order");

/// The table's row of one role.
inline const LayerTensorName& layer_tensor_name(LayerTensor t) {
  return layer_tensor_names[static_cast<std::size_t>(t)];
}

/// Whether the layers of an architecture with this spec have tensor `t`.
inline bool has_layer_tensor(const LlamaSpec& s, LayerTensor t) {
  switch (t) {
    case LayerTensor::bq:
    case LayerTensor::bk:
    case LayerTensor::bv:
      return s.qkv_bias;
    case LayerTensor::q_norm:
    case LayerTensor::k_norm:
      return s.qk_norm;
    case LayerTensor::post_attn_norm:
    case LayerTensor::post_ffn_norm:
      return s.sandwich_norms;
    default:
      return true;
  }
}

/// The shape of tensor `t` under this spec: {rows, cols} of a matrix, {size, 0} of a vector.
inline std::pair<Index, Index> layer_tensor_shape(const LlamaSpec& s, LayerTensor t) {
  const Index d = s.hidden, f = s.ffn, hd = s.head_dim;
  const Index q = Index(s.heads) * hd, kv = Index(s.kv_heads) * hd;
  switch (t) {
    case LayerTensor::wq:
      return {q, d};
    case LayerTensor::wk:
    case LayerTensor::wv:
      return {kv, d};
    case LayerTensor::wo:
      return {d, q};
    case LayerTensor::bq:
      return {q, 0};
    case LayerTensor::bk:
    case LayerTensor::bv:
      return {kv, 0};
    case LayerTensor::q_norm:
    case LayerTensor::k_norm:
      return {hd, 0};
    case LayerTensor::w_gate:
    case LayerTensor::w_up:
      return {f, d};
    case LayerTensor::w_down:
      return {d, f};
    default:
      return {d, 0};  // the d-wide norms
  }
}

/// Calls f(role, the member of each layer...) for every per-layer tensor, in LayerTensor order:
/// the one place that pairs LlamaLayerWeights' members with their roles (the loaders, validation
/// and conversions all go through it).
template <class F, class... L>
void for_each_layer_tensor(F&& f, L&... l) {
  f(LayerTensor::attn_norm, l.attn_norm...);
  f(LayerTensor::wq, l.wq...);
  f(LayerTensor::wk, l.wk...);
  f(LayerTensor::wv, l.wv...);
  f(LayerTensor::wo, l.wo...);
  f(LayerTensor::bq, l.bq...);
  f(LayerTensor::bk, l.bk...);
  f(LayerTensor::bv, l.bv...);
  f(LayerTensor::q_norm, l.q_norm...);
  f(LayerTensor::k_norm, l.k_norm...);
  f(LayerTensor::post_attn_norm, l.post_attn_norm...);
  f(LayerTensor::ffn_norm, l.ffn_norm...);
  f(LayerTensor::w_gate, l.w_gate...);
  f(LayerTensor::w_up, l.w_up...);
  f(LayerTensor::w_down, l.w_down...);
  f(LayerTensor::post_ffn_norm, l.post_ffn_norm...);
}

template <class T, class W = Matrix<T>>
struct LlamaWeights {
  static_assert(WeightStorage<W, T>, "knprobe: LlamaWeights<T, W>: W is not a WeightStorage for T");
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
      for_each_layer_tensor(
          [&](LayerTensor, auto& out, const auto& in) {
            if constexpr (std::is_same_v<std::decay_t<decltype(in)>, Vector<T>>)
              out = vec(in);
            else
              out = matrix(in);
          },
          o, l);
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
    const Index d = s.hidden;
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
    for (std::size_t i = 0; i < layers.size(); ++i)
      for_each_layer_tensor(
          [&](LayerTensor t, const auto& x) {
            if (!has_layer_tensor(s, t)) return;
            const auto [rows, cols] = layer_tensor_shape(s, t);
            const std::string what =
                "layer " + std::to_string(i) + " " + layer_tensor_name(t).label;
            if constexpr (std::is_same_v<std::decay_t<decltype(x)>, Vector<T>>)
              detail::require_size(x, rows, what.c_str());
            else
              detail::require_shape(x, rows, cols, what.c_str());
          },
          layers[i]);
  }
};

namespace detail {

inline Vector<float> as_vector(const MatrixF& m) {
  return Eigen::Map<const Vector<float>>(m.data(), m.size());
}

}  // namespace detail

namespace detail {

/// What a checkpoint states that its architecture's rules depend on. Both loaders fill it from
/// their metadata; a field the format does not carry keeps its "not stated" value.
struct ArchFacts {
  bool permuted_qk = false;  ///< wq / wk rows permuted for interleaved RoPE (llama.cpp's "llama"
                             ///< converter, llama2.c); else rotate-half
  std::optional<blocks::Activation> activation;  ///< as stated (HF hidden_act); else the arch's
  std::vector<bool> sliding;                     ///< per layer, as stated; else the arch's pattern
  int sliding_window = 0;                        ///< Gemma 3, Mistral (0 = none)
  double rope_theta_local = 0.0;                 ///< Gemma 3's sliding layers (0 = not stated)
  double query_pre_attn_scalar = 0.0;            ///< Gemma 3 (0 = not stated)
};

/// The architecture's rules, one case per architecture, applied by every loader (GGUF, Hugging
/// Face, llama2.c): activation, RoPE layout, q / k norms, q / k / v biases, sandwich norms, the
/// embedding and attention scales, and the sliding-window layers as its llama_arch_info row
/// says. The shape fields (hidden, heads, head_dim, layers) and rope_theta must be set already.
inline void apply_architecture(LlamaSpec& s, LlamaArch arch, const ArchFacts& f) {
  s.arch = arch;
  s.activation = f.activation.value_or(blocks::Activation::silu);
  s.rope_style = f.permuted_qk ? blocks::rope::Style::interleaved : blocks::rope::Style::half;
  s.rope_theta_local = s.rope_theta;
  s.qkv_bias = s.qk_norm = s.sandwich_norms = false;
  s.embed_scale = 1.0;
  s.attn_scale = 0.0;
  s.sliding.clear();
  s.sliding_window = 0;
  const LlamaArchInfo info = llama_arch_info(arch);
  switch (info.sliding) {
    case SlidingLayers::none:
      break;
    case SlidingLayers::every_layer:  // every layer, when the checkpoint states a window
      if (f.sliding_window > 0) {
        s.sliding_window = f.sliding_window;
        s.sliding.assign(static_cast<std::size_t>(s.layers), true);
      }
      break;
    case SlidingLayers::pattern:  // as stated, else every global_every-th layer is global
      s.sliding_window = f.sliding_window;
      s.sliding = f.sliding;
      if (s.sliding.empty())
        for (int i = 0; i < s.layers; ++i) s.sliding.push_back((i + 1) % info.global_every != 0);
      break;
  }
  switch (arch) {
    case LlamaArch::llama:
    case LlamaArch::mistral:
      break;
    case LlamaArch::qwen2:
      s.qkv_bias = info.always_qkv_bias;
      break;
    case LlamaArch::qwen3:
      s.qk_norm = true;
      break;
    case LlamaArch::gemma3: {
      s.activation = f.activation.value_or(blocks::Activation::gelu_tanh);
      s.qk_norm = s.sandwich_norms = true;
      if (f.rope_theta_local > 0) s.rope_theta_local = f.rope_theta_local;
      // Both references multiply by sqrt(hidden) rounded to float32: transformers casts it to the
      // weights' dtype, llama.cpp computes sqrtf(n_embd).
      s.embed_scale = static_cast<float>(std::sqrt(static_cast<double>(s.hidden)));
      // Scores are scaled by 1/sqrt(query_pre_attn_scalar). GGUF files do not carry it: llama.cpp
      // takes head_dim, except for the 62-layer 27B model, whose scalar is hidden / heads (168,
      // head_dim 128); so does this when the file does not state it.
      const double q = f.query_pre_attn_scalar > 0 ? f.query_pre_attn_scalar
                       : s.layers == 62            ? double(s.hidden) / s.heads
                                                   : double(s.head_dim);
      s.attn_scale = 1.0 / std::sqrt(q);
      break;
    }
  }
}

/// Architecture facts of a GGUF file of an architecture whose llama_arch_info row has gguf
/// (vocab_size is set from the embedding).
/// Every value the model uses is range-checked, the keys llama.cpp always writes are required, and
/// a key under "<arch>." that this backend does not know (or that holds other than its neutral
/// value: rope scaling "none", expert_count 0, ...) is refused: it may change the
/// computation (rope scaling, soft-capping, ...) or be a damaged name whose default would be used
/// silently.
inline LlamaSpec gguf_llama_spec(const io::GgufFile& f) {
  const std::string arch = f.get_string("general.architecture");
  const auto arch_id = parse_llama_arch(arch, /*gguf=*/true);
  KNPROBE_REQUIRE(arch_id, FormatError, f.path(), ": architecture '", arch,
                  "' is not supported by the Llama-family backend (", llama_arch_names(true), ")");
  const LlamaArchInfo info = llama_arch_info(*arch_id);
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
  ArchFacts facts;
  if (info.sliding == SlidingLayers::pattern) {
    facts.rope_theta_local = f.get_double_in(p + "rope.freq_base_swa", 1.0, 1e12, 10000.0);
    facts.sliding_window =
        static_cast<int>(f.get_int_in(p + "attention.sliding_window", 1, s.context_length));
  } else {
    KNPROBE_REQUIRE(!f.has(p + "attention.sliding_window") && !f.has(p + "rope.freq_base_swa"),
                    FormatError, f.path(), ": sliding-window attention is not implemented for ",
                    arch, " files");
  }
  // llama.cpp's converter permutes a llama file's wq / wk rows for interleaved RoPE; Qwen and
  // Gemma files keep Hugging Face's order and use rotate-half (NEOX).
  facts.permuted_qk = info.gguf_permuted_qk;
  apply_architecture(s, *arch_id, facts);
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
  KNPROBE_REQUIRE(f.get_int_in(std::string(s.family()) + ".vocab_size", 1, 1 << 24, s.vocab_size) ==
                      s.vocab_size,
                  FormatError, f.path(), ": ", s.family(), ".vocab_size differs from the ",
                  s.vocab_size, " rows of token_embd.weight");
  for (const auto id : {s.bos, s.eos})
    KNPROBE_REQUIRE(!id || *id < s.vocab_size, FormatError, f.path(), ": special token id ", *id,
                    " outside the vocabulary of ", s.vocab_size);
  if (f.has_tensor("output.weight")) w.lm_head = matrix("output.weight");
  w.final_norm = vector("output_norm.weight");
  if (f.has_tensor("rope_freqs.weight")) {  // Llama 3.x "llama3" RoPE scaling, as factors
    KNPROBE_REQUIRE(llama_arch_info(s.arch).rope_freq_factors, FormatError, f.path(),
                    ": rope_freqs.weight in a ", s.family(), " file is not implemented");
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
    for_each_layer_tensor(
        [&](LayerTensor t, auto& x) {
          if (!has_layer_tensor(s, t)) return;
          const std::string name = b + layer_tensor_name(t).gguf;
          if constexpr (std::is_same_v<std::decay_t<decltype(x)>, Vector<float>>)
            x = vector(name);
          else
            x = matrix(name);
        },
        l);
    w.layers.push_back(std::move(l));
  }
  for (const auto& t : f.tensors())
    KNPROBE_REQUIRE(used.count(t.name), FormatError, f.path(), ": tensor '", t.name,
                    "' is not used by the ", s.family(),
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
  s.vocab_size = c.config.vocab_size;
  s.hidden = c.config.dim;
  s.ffn = c.config.hidden_dim;
  s.layers = c.config.n_layers;
  s.heads = c.config.n_heads;
  s.kv_heads = c.config.n_kv_heads;
  s.head_dim = c.config.head_size();
  s.norm_eps = 1e-5;
  s.context_length = c.config.seq_len;
  detail::ArchFacts facts;
  facts.permuted_qk = true;  // llama2.c's export permutes wq / wk like llama.cpp's converter
  detail::apply_architecture(s, LlamaArch::llama, facts);
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

namespace detail {

/// The spec of a Hugging Face Llama-family config (`path` names it in errors).
inline LlamaSpec hf_llama_spec(const io::LlamaConfig& cfg, const std::string& path) {
  LlamaSpec s;
  s.vocab_size = cfg.vocab_size;
  s.hidden = cfg.hidden_size;
  s.ffn = cfg.intermediate_size;
  s.layers = cfg.num_hidden_layers;
  s.heads = cfg.num_attention_heads;
  s.kv_heads = cfg.num_key_value_heads;
  s.head_dim = cfg.resolved_head_dim();
  s.norm_eps = cfg.rms_norm_eps;
  s.rope_theta = cfg.rope_theta;
  s.bos = cfg.bos_token_id;
  s.eos = cfg.eos_token_id;
  s.context_length = cfg.max_position_embeddings;
  KNPROBE_REQUIRE(cfg.hidden_act == "silu" || cfg.hidden_act == "gelu_pytorch_tanh", FormatError,
                  path, ": activation '", cfg.hidden_act, "' not supported");
  detail::ArchFacts facts;
  facts.activation =
      cfg.hidden_act == "silu" ? blocks::Activation::silu : blocks::Activation::gelu_tanh;
  facts.sliding_window = cfg.sliding_window;
  facts.rope_theta_local = cfg.rope_local_base_freq;
  facts.query_pre_attn_scalar = cfg.query_pre_attn_scalar;
  for (const auto& t : cfg.layer_types) facts.sliding.push_back(t == "sliding_attention");
  const auto arch = parse_llama_arch(cfg.model_type);
  KNPROBE_REQUIRE(arch, FormatError, path, ": model_type '", cfg.model_type,
                  "' is not a Llama-family model this backend implements");
  detail::apply_architecture(s, *arch, facts);
  if (cfg.llama3_rope)
    s.rope_freq_factors = cfg.llama3_rope->freq_factors(s.rope_theta, s.head_dim);
  return s;
}

}  // namespace detail

/// Hugging Face directory (config.json + safetensors) of LlamaForCausalLM (Llama 2 / 3.x),
/// MistralForCausalLM, Qwen2ForCausalLM (q / k / v biases), Qwen3ForCausalLM (q / k RMSNorm) or
/// Gemma3ForCausalLM. Norm weights an architecture stores zero-centred (Gemma: w − 1) get their 1
/// added here.
inline LlamaWeights<float> load_llama_safetensors(const std::filesystem::path& dir) {
  const auto cfg = io::read_llama_config(dir / "config.json");
  const io::SafetensorsCheckpoint ck(dir);
  LlamaWeights<float> w;
  w.spec = detail::hf_llama_spec(cfg, (dir / "config.json").string());
  const auto& s = w.spec;
  const bool zero_centred = llama_arch_info(s.arch).hf_zero_centred_norms;
  const detail::CheckpointReader r(ck);
  const Index d = s.hidden;
  auto vec = [&](const std::string& name, Index n) {
    VectorF v = r.vector(name, n);
    if (zero_centred) v.array() += 1.0f;
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
    for_each_layer_tensor(
        [&](LayerTensor t, auto& x) {
          if (!has_layer_tensor(s, t)) return;
          const auto& n = layer_tensor_name(t);
          const std::string name = b + (s.sandwich_norms && n.hf_sandwich ? n.hf_sandwich : n.hf);
          const auto [rows, cols] = layer_tensor_shape(s, t);
          if constexpr (std::is_same_v<std::decay_t<decltype(x)>, VectorF>)
            x = vec(name, rows);
          else
            x = r.matrix(name, rows, cols);
        },
        l);
    w.layers.push_back(std::move(l));
  }
  // Buffers transformers recomputes (RoPE inverse frequencies) and an lm_head the config ties to
  // the embedding (transformers ignores it) carry nothing the model lacks.
  r.refuse_unread(s.family(), [&](const std::string& n) {
    return n.ends_with("rotary_emb.inv_freq") || (cfg.tie_word_embeddings && n == "lm_head.weight");
  });
  w.validate();
  return w;
}

}  // namespace knprobe
