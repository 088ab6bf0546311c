#pragma once
// Llama-family causal LM on the CPU (Llama 2 / llama2.c, Gemma 3), implementing ProbeableModel.
// Layer i (Gemma-only steps in brackets), rows = token positions:
//   a = RMSNorm(h);  q, k, v = a Wqᵀ, a Wkᵀ, a Wvᵀ;  [q, k = RMSNorm per head];  RoPE(q, k)
//   o = Attention(q, k, v; causal [, sliding window]) Woᵀ;  [o = RMSNorm(o)];  h += o
//   f = RMSNorm(h);  u = act(f Wgᵀ) ⊙ (f Wuᵀ)   ← the FFN neurons (NeuronSite::gated_product)
//   d = u Wdᵀ;  [d = RMSNorm(d)];  h += d
// logits = RMSNorm(h) Eᵀ (E = embedding when tied). Input h₀ = embed_scale · E[ids].
//
// Weight storage is a template parameter: dense Matrix<T> (default) or QuantizedMatrix (the GGUF
// blocks, dequantized tile by tile inside each product; `QuantizedLlamaModel`).
//
// Traces, layer_gradients, intervention passes and mean activations come from the causal-decoder
// driver shared with GPT-2 (model/causal_decoder.hpp); this file supplies the layer pieces.

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <span>
#include <type_traits>
#include <vector>

#include "knprobe/model/blocks/activation.hpp"
#include "knprobe/model/blocks/attention.hpp"
#include "knprobe/model/blocks/embedding.hpp"
#include "knprobe/model/blocks/linear.hpp"
#include "knprobe/model/blocks/rms_norm.hpp"
#include "knprobe/model/blocks/rope.hpp"
#include "knprobe/model/blocks/softmax.hpp"
#include "knprobe/model/causal_decoder.hpp"
#include "knprobe/model/concept.hpp"
#include "knprobe/model/llama_weights.hpp"

namespace knprobe {

template <class T = float, class W = Matrix<T>>
class LlamaModel : public detail::CausalDecoder<LlamaModel<T, W>, T> {
  using Base = detail::CausalDecoder<LlamaModel<T, W>, T>;
  friend Base;

 public:
  using Scalar = T;
  using Trace = typename Base::Trace;
  using WeightMatrix = W;
  static constexpr bool quantized = std::is_same_v<W, QuantizedMatrix>;
  static_assert(WeightStorage<W, T>,
                "knprobe: LlamaModel<T, W>: W is not a WeightStorage for T (model/concept.hpp; "
                "quantized weights compute in float only)");

  explicit LlamaModel(LlamaWeights<T, W> w) : w_(std::move(w)) { w_.validate(); }

  /// Loads a .gguf file, a llama2.c .bin checkpoint, or a Hugging Face directory. With quantized
  /// storage a GGUF file's blocks are used in place; other formats become F32 blocks.
  static LlamaModel load(const std::filesystem::path& path) {
    if constexpr (quantized) {
      if (!std::filesystem::is_directory(path) && path.extension() == ".gguf")
        return LlamaModel(load_llama_gguf_quantized(std::make_shared<const io::GgufFile>(path)));
      return LlamaModel(LlamaModel<float>::load(path).weights().to_quantized_storage());
    } else {
      if (std::filesystem::is_directory(path))
        return LlamaModel(load_llama_safetensors(path).template cast<T>());
      if (path.extension() == ".gguf")
        return LlamaModel(load_llama_gguf(io::GgufFile(path)).template cast<T>());
      return LlamaModel(load_llama2c(path).template cast<T>());
    }
  }

  int num_layers() const { return w_.spec.layers; }
  int ffn_width() const { return w_.spec.ffn; }
  int hidden_size() const { return w_.spec.hidden; }
  int vocab_size() const { return w_.spec.vocab_size; }
  /// Longest token sequence accepted: the context the checkpoint states (llama2.c seq_len, GGUF
  /// context_length, HF max_position_embeddings), or 2^20 when it states none.
  int max_positions() const {
    return w_.spec.context_length > 0 ? w_.spec.context_length : 1 << 20;
  }
  const LlamaSpec& spec() const { return w_.spec; }
  const LlamaWeights<T, W>& weights() const { return w_; }

  /// Column `unit` of layer `layer`'s down projection: the vector the neuron writes (before
  /// Gemma's post-FFN norm, through which it acts).
  Vector<T> value_vector(int layer, int unit) const {
    check_layer(layer);
    KNPROBE_REQUIRE(unit >= 0 && unit < ffn_width(), ArgumentError, "value_vector: unit ", unit,
                    " outside [0, ", ffn_width(), ")");
    return blocks::linear::column(w_.layers[static_cast<std::size_t>(layer)].w_down, unit);
  }
  void set_value_vector(int layer, int unit, const Vector<T>& v) {
    check_layer(layer);
    KNPROBE_REQUIRE(unit >= 0 && unit < ffn_width(), ArgumentError, "set_value_vector: unit ", unit,
                    " outside [0, ", ffn_width(), ")");
    detail::require_size(v, hidden_size(), "set_value_vector v");
    blocks::linear::set_column(w_.layers[static_cast<std::size_t>(layer)].w_down, unit, v);
  }
  /// Row `id` of the (unscaled) input embedding.
  Vector<T> token_embedding(TokenId id) const {
    check_token(id);
    return blocks::linear::row(w_.embed, id);
  }

 private:
  static constexpr const char* arch_name = "llama";
  static constexpr const char* context_name = "context";
  static constexpr auto plain = blocks::rms_norm::WeightForm::plain;

  struct LayerCache {
    Matrix<T> h_in, a, q_pre, k_pre, q, k_new, v_new, k_full, v_full, o, o2, h_mid, f, g, u, ag,
        act, down;
    blocks::rms_norm::Cache<T> n_attn, n_q, n_k, n_post_attn, n_ffn, n_post_ffn;
    blocks::attention::Cache<T> attn;
  };

  using NormCache = blocks::rms_norm::Cache<T>;
  using Base::check_layer;
  using Base::check_token;

  T eps() const { return static_cast<T>(w_.spec.norm_eps); }
  /// E [V × d], the output head (the embedding when tied): logits x Eᵀ.
  const W& head_weights() const { return w_.head(); }
  void final_norm(const Matrix<T>& h, Matrix<T>& x, NormCache& nc) const {
    blocks::rms_norm::forward<T>(h, w_.final_norm, eps(), plain, x, nc);
  }
  void final_norm_backward(const Matrix<T>& dx, const Matrix<T>& h, const NormCache& nc,
                           Matrix<T>& dh) const {
    blocks::rms_norm::backward<T>(dx, h, w_.final_norm, plain, nc, dh);
  }
  /// h₀ = embed_scale · E[ids] (RoPE carries the positions).
  void embed(std::span<const TokenId> ids, std::span<const int>, Matrix<T>& h) const {
    blocks::embedding::forward<T>(ids, w_.embed, static_cast<T>(w_.spec.embed_scale), h);
  }

  /// Per-head RMSNorm of x [R × H·hd] with weight [hd].
  void head_norm(Matrix<T>& x, int heads, const Vector<T>& w, Matrix<T>& pre,
                 blocks::rms_norm::Cache<T>& cache) const {
    const int hd = w_.spec.head_dim;
    pre = Eigen::Map<const Matrix<T>>(x.data(), x.rows() * heads, hd);
    Matrix<T> y;
    blocks::rms_norm::forward<T>(pre, w, eps(), plain, y, cache);
    Eigen::Map<Matrix<T>>(x.data(), x.rows() * heads, hd) = y;
  }
  void head_norm_backward(Matrix<T>& dx, int heads, const Vector<T>& w, const Matrix<T>& pre,
                          const blocks::rms_norm::Cache<T>& cache) const {
    const int hd = w_.spec.head_dim;
    const Matrix<T> dy = Eigen::Map<const Matrix<T>>(dx.data(), dx.rows() * heads, hd);
    Matrix<T> d;
    blocks::rms_norm::backward<T>(dy, pre, w, plain, cache, d);
    Eigen::Map<Matrix<T>>(dx.data(), dx.rows() * heads, hd) = d;
  }

  blocks::rope::Spec rope_spec(int l, int heads) const {
    return {heads, w_.spec.head_dim,         w_.spec.theta(l), w_.spec.rope_style,
            0,     w_.spec.rope_freq_factors};
  }

  /// h → c.q, c.k_new, c.v_new: attention norm, projections, [biases, per-head norms], RoPE at
  /// the rows' positions.
  void attention_in(int l, const Matrix<T>& h, std::span<const int> pos, LayerCache& c) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    const auto& s = w_.spec;
    c.h_in = h;
    blocks::rms_norm::forward<T>(h, L.attn_norm, eps(), plain, c.a, c.n_attn);
    blocks::linear::forward<T>(c.a, L.wq, c.q);
    blocks::linear::forward<T>(c.a, L.wk, c.k_new);
    blocks::linear::forward<T>(c.a, L.wv, c.v_new);
    if (s.qkv_bias) {  // constants: the backward pass is unchanged
      c.q.rowwise() += L.bq.transpose();
      c.k_new.rowwise() += L.bk.transpose();
      c.v_new.rowwise() += L.bv.transpose();
    }
    if (s.qk_norm) {
      head_norm(c.q, s.heads, L.q_norm, c.q_pre, c.n_q);
      head_norm(c.k_new, s.kv_heads, L.k_norm, c.k_pre, c.n_k);
    }
    blocks::rope::forward<T>(c.q, pos, rope_spec(l, s.heads));
    blocks::rope::forward<T>(c.k_new, pos, rope_spec(l, s.kv_heads));
  }

  blocks::attention::Shape attention_shape(int l) const {
    const auto& s = w_.spec;
    blocks::attention::Shape sh;
    sh.n_heads = s.heads;
    sh.n_kv_heads = s.kv_heads;
    sh.head_dim = s.head_dim;
    sh.mask = blocks::attention::Mask::causal;
    if (s.is_sliding(l)) sh.window = s.sliding_window;
    sh.scale = s.attention_scale();
    return sh;
  }

  /// c.o → c.h_mid = h + [post-attention norm](c.o Woᵀ).
  void attention_out(int l, const Matrix<T>& h, LayerCache& c) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    blocks::linear::forward<T>(c.o, L.wo, c.o2);
    if (w_.spec.sandwich_norms) {
      Matrix<T> n;
      blocks::rms_norm::forward<T>(c.o2, L.post_attn_norm, eps(), plain, n, c.n_post_attn);
      c.h_mid = h + n;
    } else {
      c.h_mid = h + c.o2;
    }
  }

  /// c.h_mid → c.act (the neuron site).
  void ffn_pre(int l, LayerCache& c) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    blocks::rms_norm::forward<T>(c.h_mid, L.ffn_norm, eps(), plain, c.f, c.n_ffn);
    blocks::linear::forward<T>(c.f, L.w_gate, c.g);
    blocks::linear::forward<T>(c.f, L.w_up, c.u);
    blocks::activation::forward<T>(w_.spec.activation, c.g, c.ag);
    c.act = c.ag.cwiseProduct(c.u);
  }

  /// c.act → h (the residual stream leaving layer l).
  void ffn_post(int l, LayerCache& c, Matrix<T>& h) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    blocks::linear::forward<T>(c.act, L.w_down, c.down);
    if (w_.spec.sandwich_norms) {
      Matrix<T> n;
      blocks::rms_norm::forward<T>(c.down, L.post_ffn_norm, eps(), plain, n, c.n_post_ffn);
      h = c.h_mid + n;
    } else {
      h = c.h_mid + c.down;
    }
  }

  /// dL/d(h leaving layer l) → dL/d(h_mid). With `d_act`, stops at the neuron site instead.
  Matrix<T> ffn_backward(int l, const LayerCache& c, const Matrix<T>& dh, Matrix<T>* d_act) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    Matrix<T> d_down;
    if (w_.spec.sandwich_norms)
      blocks::rms_norm::backward<T>(dh, c.down, L.post_ffn_norm, plain, c.n_post_ffn, d_down);
    else
      d_down = dh;
    Matrix<T> da;
    blocks::linear::backward<T>(d_down, L.w_down, da);
    if (d_act) {
      *d_act = std::move(da);
      return {};
    }
    Matrix<T> dg, tmp = da.cwiseProduct(c.u);
    blocks::activation::backward<T>(w_.spec.activation, tmp, c.g, dg);
    const Matrix<T> du = da.cwiseProduct(c.ag);
    Matrix<T> df;
    blocks::linear::backward<T>(dg, L.w_gate, df);
    blocks::linear::backward_add<T>(du, L.w_up, df);
    Matrix<T> dmid;
    blocks::rms_norm::backward<T>(df, c.h_mid, L.ffn_norm, plain, c.n_ffn, dmid);
    return dh + dmid;
  }

  /// dL/d(h_mid) → dL/d(c.o): back through [the post-attention norm and] the output projection.
  Matrix<T> attention_out_backward(int l, const LayerCache& c, const Matrix<T>& dmid) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    Matrix<T> d_o2;
    if (w_.spec.sandwich_norms)
      blocks::rms_norm::backward<T>(dmid, c.o2, L.post_attn_norm, plain, c.n_post_attn, d_o2);
    else
      d_o2 = dmid;
    Matrix<T> d_o;
    blocks::linear::backward<T>(d_o2, L.wo, d_o);
    return d_o;
  }

  /// (dq, dk, dv) of the rows' own queries, keys and values → dL/dh through RoPE, [per-head
  /// norms], the projections and the attention norm.
  Matrix<T> attention_in_backward(int l, std::span<const int> pos, const LayerCache& c,
                                  Matrix<T>& dq, Matrix<T>& dk, const Matrix<T>& dv) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    const auto& s = w_.spec;
    blocks::rope::backward<T>(dq, pos, rope_spec(l, s.heads));
    blocks::rope::backward<T>(dk, pos, rope_spec(l, s.kv_heads));
    if (s.qk_norm) {
      head_norm_backward(dq, s.heads, L.q_norm, c.q_pre, c.n_q);
      head_norm_backward(dk, s.kv_heads, L.k_norm, c.k_pre, c.n_k);
    }
    Matrix<T> da;
    blocks::linear::backward<T>(dq, L.wq, da);
    blocks::linear::backward_add<T>(dk, L.wk, da);
    blocks::linear::backward_add<T>(dv, L.wv, da);
    Matrix<T> dh;
    blocks::rms_norm::backward<T>(da, c.h_in, L.attn_norm, plain, c.n_attn, dh);
    return dh;
  }

  /// Width of a cached key / value row.
  int kv_width() const { return w_.spec.kv_heads * w_.spec.head_dim; }
  /// Bytes one row keeps in a forward LayerCache, attending over kv_len keys (also the bound of
  /// layer_gradients' per-layer caches).
  double row_bytes(double kv_len) const {
    const auto& sp = w_.spec;
    const double kvd = double(sp.kv_heads) * sp.head_dim, qd = double(sp.heads) * sp.head_dim;
    return sizeof(T) * (6.0 * hidden_size() + 2.0 * qd + 2.0 * kvd * (1.0 + kv_len) +
                        sp.heads * kv_len + 4.0 * ffn_width());
  }

  /// Bytes one traced row keeps (resid_mid, keys, values, activations of every layer, with
  /// the stacked pass's working rows).
  double trace_row_bytes() const {
    const auto& sp = w_.spec;
    return sizeof(T) * num_layers() *
           (3.0 * hidden_size() + 2.0 * double(sp.kv_heads) * sp.head_dim + ffn_width());
  }

  LlamaWeights<T, W> w_;
};

/// Gemma / Llama with the GGUF file's quantized blocks used in place (fast to load; each product
/// dequantizes tiles of rows on the fly).
using QuantizedLlamaModel = LlamaModel<float, QuantizedMatrix>;

template <class T, class W>
struct ArchTraits<LlamaModel<T, W>> {
  static constexpr Objective objective = Objective::causal_lm;
  static constexpr FfnLayout ffn_layout = FfnLayout::gated;
  static constexpr NeuronSite neuron_site = NeuronSite::gated_product;
};

#if KNPROBE_EXTERN_TEMPLATES
// knprobe's own programs and tests compile these once, in the knprobe_instances library
// (src/instances/); a user's code instantiates them where used, as for any header-only library.
extern template class detail::CausalDecoder<LlamaModel<float>, float>;
extern template class detail::CausalDecoder<LlamaModel<double>, double>;
extern template class detail::CausalDecoder<LlamaModel<float, QuantizedMatrix>, float>;
extern template class LlamaModel<float>;
extern template class LlamaModel<double>;
extern template class LlamaModel<float, QuantizedMatrix>;
#endif

}  // namespace knprobe
