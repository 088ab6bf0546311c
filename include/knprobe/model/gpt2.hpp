#pragma once
// GPT-2 causal LM (GPT2LMHeadModel) on the CPU, implementing ProbeableModel. Rows = positions:
//   h₀ = E[ids] + P[0..T)                                  (learned positions)
//   layer i:  a = LN₁(h);  q, k, v = a Wqᵀ + b_q, …;  o = Attention(q, k, v; causal) Woᵀ + b_o
//             h_mid = h + o;  f = LN₂(h_mid);  z = f W_fcᵀ + b_fc;  u = gelu_new(z)
//             h = h_mid + u W_projᵀ + b_proj
//   logits = LN_f(h) Eᵀ                                    (head tied to the token embedding)
// Conv1D weights are stored [in, out] in the checkpoint and transposed once at load.
//
// The neuron site is a compile-time choice: u (post-activation, the vector W_proj multiplies, the
// default) or z (pre-activation, the `mlp.c_fc` output that the EleutherAI reference hooks).
// Traces, layer_gradients, intervention passes and mean activations come from the causal-decoder
// driver shared with the Llama family (model/causal_decoder.hpp); this file supplies the layers.

#include <algorithm>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "knprobe/io/hf_config.hpp"
#include "knprobe/model/blocks/activation.hpp"
#include "knprobe/model/blocks/attention.hpp"
#include "knprobe/model/blocks/layer_norm.hpp"
#include "knprobe/model/blocks/linear.hpp"
#include "knprobe/model/blocks/softmax.hpp"
#include "knprobe/model/causal_decoder.hpp"
#include "knprobe/model/checkpoint_reader.hpp"
#include "knprobe/model/concept.hpp"

namespace knprobe {

template <class T>
struct Gpt2LayerWeights {
  Vector<T> ln1_g, ln1_b;    ///< [d]
  Matrix<T> wq, wk, wv, wo;  ///< [d × d] (c_attn split in three, transposed)
  Vector<T> bq, bk, bv, bo;  ///< [d]
  Vector<T> ln2_g, ln2_b;    ///< [d]
  Matrix<T> w_fc, w_proj;    ///< [ffn × d], [d × ffn]
  Vector<T> b_fc, b_proj;    ///< [ffn], [d]
};

namespace detail {
/// Calls f(name, rows, cols, the member of each of `ws`...) for every tensor of GPT-2 weights,
/// with the shape `c` gives it (a vector has cols = 1) and layers 0..n_layers: the one place that
/// pairs Gpt2Weights' members with their names and shapes (validation and casts go through it).
template <class F, class... W>
void for_each_gpt2_tensor(const io::Gpt2Config& c, std::size_t n_layers, F&& f, W&... ws) {
  const Index d = c.n_embd, ff = c.ffn_width();
  f("wte.weight", c.vocab_size, d, ws.wte...);
  f("wpe.weight", c.n_positions, d, ws.wpe...);
  f("ln_f.weight", d, 1, ws.lnf_g...);
  f("ln_f.bias", d, 1, ws.lnf_b...);
  for (std::size_t i = 0; i < n_layers; ++i) {
    const std::string h = "h." + std::to_string(i) + ".";
    f(h + "ln_1.weight", d, 1, ws.layers[i].ln1_g...);
    f(h + "ln_1.bias", d, 1, ws.layers[i].ln1_b...);
    f(h + "attn.c_attn.weight (q)", d, d, ws.layers[i].wq...);
    f(h + "attn.c_attn.weight (k)", d, d, ws.layers[i].wk...);
    f(h + "attn.c_attn.weight (v)", d, d, ws.layers[i].wv...);
    f(h + "attn.c_attn.bias (q)", d, 1, ws.layers[i].bq...);
    f(h + "attn.c_attn.bias (k)", d, 1, ws.layers[i].bk...);
    f(h + "attn.c_attn.bias (v)", d, 1, ws.layers[i].bv...);
    f(h + "attn.c_proj.weight", d, d, ws.layers[i].wo...);
    f(h + "attn.c_proj.bias", d, 1, ws.layers[i].bo...);
    f(h + "ln_2.weight", d, 1, ws.layers[i].ln2_g...);
    f(h + "ln_2.bias", d, 1, ws.layers[i].ln2_b...);
    f(h + "mlp.c_fc.weight", ff, d, ws.layers[i].w_fc...);
    f(h + "mlp.c_fc.bias", ff, 1, ws.layers[i].b_fc...);
    f(h + "mlp.c_proj.weight", d, ff, ws.layers[i].w_proj...);
    f(h + "mlp.c_proj.bias", d, 1, ws.layers[i].b_proj...);
  }
}
}  // namespace detail

template <class T>
struct Gpt2Weights {
  io::Gpt2Config config;
  Matrix<T> wte, wpe;      ///< [V × d], [n_positions × d]
  Vector<T> lnf_g, lnf_b;  ///< [d]
  std::vector<Gpt2LayerWeights<T>> layers;

  /// The same weights in another scalar type (tests run the model in double).
  template <class U>
  Gpt2Weights<U> cast() const {
    Gpt2Weights<U> o;
    o.config = config;
    o.layers.resize(layers.size());
    detail::for_each_gpt2_tensor(
        config, layers.size(),
        [](const auto&, Index, Index, const auto& in, auto& out) { out = in.template cast<U>(); },
        *this, o);
    return o;
  }

  /// Throws ShapeError naming the first tensor whose shape disagrees with `config` (or a config
  /// no GPT-2 can have), FormatError for an activation it does not implement.
  void validate() const {
    const auto& c = config;
    KNPROBE_REQUIRE(
        c.n_layer > 0 && c.n_embd > 0 && c.n_head > 0 && c.n_embd % c.n_head == 0 &&
            c.vocab_size > 0 && c.n_positions > 0 && c.n_inner >= 0 && c.layer_norm_epsilon > 0,
        ShapeError, "gpt2: invalid config (n_layer ", c.n_layer, ", n_embd ", c.n_embd, ", n_head ",
        c.n_head, ", vocab_size ", c.vocab_size, ", n_positions ", c.n_positions, ", n_inner ",
        c.n_inner, ", layer_norm_epsilon ", c.layer_norm_epsilon, ")");
    KNPROBE_REQUIRE(c.activation_function == "gelu_new" || c.activation_function == "gelu" ||
                        c.activation_function == "gelu_pytorch_tanh",
                    FormatError, "gpt2: activation_function '", c.activation_function,
                    "' not supported");
    KNPROBE_REQUIRE(static_cast<int>(layers.size()) == c.n_layer, ShapeError,
                    "gpt2: ", layers.size(), " layers for n_layer = ", c.n_layer);
    detail::for_each_gpt2_tensor(
        c, layers.size(),
        [](const std::string& name, Index rows, Index cols, const auto& x) {
          const std::string what = "gpt2 " + name;
          if constexpr (std::is_same_v<std::decay_t<decltype(x)>, Vector<T>>)
            detail::require_size(x, rows, what.c_str());
          else
            detail::require_shape(x, rows, cols, what.c_str());
        },
        *this);
  }
};

/// Reads a Hugging Face GPT2LMHeadModel / GPT2Model directory (config.json + safetensors, with or
/// without the "transformer." prefix). Every tensor's shape is checked against the config.
inline Gpt2Weights<float> load_gpt2_safetensors(const std::filesystem::path& dir) {
  Gpt2Weights<float> w;
  w.config = io::read_gpt2_config(dir / "config.json");
  const auto& c = w.config;
  KNPROBE_REQUIRE(c.activation_function == "gelu_new" || c.activation_function == "gelu" ||
                      c.activation_function == "gelu_pytorch_tanh",
                  FormatError, dir.string(), ": activation_function '", c.activation_function,
                  "' not supported");
  const io::SafetensorsCheckpoint ck(dir);
  const detail::CheckpointReader r(ck);
  const std::string m = r.contains("transformer.wte.weight") ? "transformer." : "";
  const Index d = c.n_embd, f = c.ffn_width();
  w.wte = r.matrix(m + "wte.weight", c.vocab_size, d);
  w.wpe = r.matrix(m + "wpe.weight", c.n_positions, d);
  w.lnf_g = r.vector(m + "ln_f.weight", d);
  w.lnf_b = r.vector(m + "ln_f.bias", d);
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string b = m + "h." + std::to_string(i) + ".";
    Gpt2LayerWeights<float> l;
    l.ln1_g = r.vector(b + "ln_1.weight", d);
    l.ln1_b = r.vector(b + "ln_1.bias", d);
    const MatrixF qkv = r.matrix_transposed(b + "attn.c_attn.weight", 3 * d, d);
    const VectorF bqkv = r.vector(b + "attn.c_attn.bias", 3 * d);
    l.wq = qkv.topRows(d);
    l.wk = qkv.middleRows(d, d);
    l.wv = qkv.bottomRows(d);
    l.bq = bqkv.head(d);
    l.bk = bqkv.segment(d, d);
    l.bv = bqkv.tail(d);
    l.wo = r.matrix_transposed(b + "attn.c_proj.weight", d, d);
    l.bo = r.vector(b + "attn.c_proj.bias", d);
    l.ln2_g = r.vector(b + "ln_2.weight", d);
    l.ln2_b = r.vector(b + "ln_2.bias", d);
    l.w_fc = r.matrix_transposed(b + "mlp.c_fc.weight", f, d);
    l.b_fc = r.vector(b + "mlp.c_fc.bias", f);
    l.w_proj = r.matrix_transposed(b + "mlp.c_proj.weight", d, f);
    l.b_proj = r.vector(b + "mlp.c_proj.bias", d);
    w.layers.push_back(std::move(l));
  }
  if (r.contains("lm_head.weight")) {  // saved tied heads must equal the embedding
    const MatrixF head = r.matrix("lm_head.weight", c.vocab_size, d);
    KNPROBE_REQUIRE(head == w.wte, FormatError, dir.string(),
                    ": lm_head.weight differs from wte.weight, but GPT-2 ties them");
  }
  return w;
}

template <class T = float, NeuronSite Site = NeuronSite::post_activation>
class Gpt2Model : public detail::CausalDecoder<Gpt2Model<T, Site>, T> {
  static_assert(Site == NeuronSite::post_activation || Site == NeuronSite::pre_activation,
                "GPT-2 neurons are post- or pre-activation");
  using Base = detail::CausalDecoder<Gpt2Model<T, Site>, T>;
  friend Base;

 public:
  using Scalar = T;
  using Trace = typename Base::Trace;

  explicit Gpt2Model(Gpt2Weights<T> w) : w_(std::move(w)) {
    const auto& c = w_.config;
    act_ = c.activation_function == "gelu" ? blocks::Activation::gelu_erf
                                           : blocks::Activation::gelu_tanh;
    w_.validate();
  }

  /// A Hugging Face GPT-2 directory (config.json + model.safetensors).
  static Gpt2Model load(const std::filesystem::path& dir) {
    auto w = load_gpt2_safetensors(dir);
    if constexpr (std::is_same_v<T, float>)
      return Gpt2Model(std::move(w));
    else
      return Gpt2Model(w.template cast<T>());
  }

  int num_layers() const { return w_.config.n_layer; }
  int ffn_width() const { return w_.config.ffn_width(); }
  int hidden_size() const { return w_.config.n_embd; }
  int vocab_size() const { return w_.config.vocab_size; }
  /// The learned position table's size (n_positions).
  int max_positions() const { return w_.config.n_positions; }
  const Gpt2Weights<T>& weights() const { return w_; }

  /// Column `unit` of layer `layer`'s `mlp.c_proj` (as y = x Wᵀ): the vector the neuron writes.
  Vector<T> value_vector(int layer, int unit) const {
    check_layer(layer);
    check_unit(unit);
    return w_.layers[static_cast<std::size_t>(layer)].w_proj.col(unit);
  }
  void set_value_vector(int layer, int unit, const Vector<T>& v) {
    check_layer(layer);
    check_unit(unit);
    detail::require_size(v, hidden_size(), "set_value_vector v");
    w_.layers[static_cast<std::size_t>(layer)].w_proj.col(unit) = v;
  }
  Vector<T> token_embedding(TokenId id) const {
    check_token(id);
    return w_.wte.row(id).transpose();
  }

 private:
  static constexpr const char* arch_name = "gpt2";
  static constexpr const char* context_name = "n_positions";
  struct LayerCache {
    Matrix<T> h_in, a, q, k_new, v_new, k_full, v_full, o, h_mid, f, pre, post, act, down;
    blocks::layer_norm::Cache<T> n1, n2;
    blocks::attention::Cache<T> attn;
  };
  using NormCache = blocks::layer_norm::Cache<T>;
  using Base::check_layer;
  using Base::check_token;
  using Base::check_unit;

  T eps() const { return static_cast<T>(w_.config.layer_norm_epsilon); }

  /// h₀ = E[ids] + P[positions] (learned positions).
  void embed(std::span<const TokenId> ids, std::span<const int> pos, Matrix<T>& h) const {
    h.resize(Index(ids.size()), hidden_size());
    for (std::size_t i = 0; i < ids.size(); ++i)
      h.row(Index(i)) = w_.wte.row(ids[i]) + w_.wpe.row(pos[i]);
  }
  const Matrix<T>& head_weights() const { return w_.wte; }  // tied to the embedding
  void final_norm(const Matrix<T>& h, Matrix<T>& x, NormCache& nc) const {
    blocks::layer_norm::forward<T>(h, w_.lnf_g, w_.lnf_b, eps(), x, nc);
  }
  void final_norm_backward(const Matrix<T>& dx, const Matrix<T>&, const NormCache& nc,
                           Matrix<T>& dh) const {
    blocks::layer_norm::backward<T>(dx, w_.lnf_g, nc, dh);
  }

  blocks::attention::Shape attention_shape(int) const {
    blocks::attention::Shape sh;
    sh.n_heads = sh.n_kv_heads = w_.config.n_head;
    sh.head_dim = hidden_size() / w_.config.n_head;
    sh.mask = blocks::attention::Mask::causal;
    sh.scale = 1.0 / std::sqrt(static_cast<double>(sh.head_dim));
    return sh;
  }

  /// h → c.q, c.k_new, c.v_new: LN₁ and the biased projections (positions are in h already).
  void attention_in(int l, const Matrix<T>& h, std::span<const int>, LayerCache& c) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    c.h_in = h;
    blocks::layer_norm::forward<T>(h, L.ln1_g, L.ln1_b, eps(), c.a, c.n1);
    blocks::linear::forward<T>(c.a, L.wq, L.bq, c.q);
    blocks::linear::forward<T>(c.a, L.wk, L.bk, c.k_new);
    blocks::linear::forward<T>(c.a, L.wv, L.bv, c.v_new);
  }

  /// c.o → c.h_mid = h + c.o Woᵀ + b_o.
  void attention_out(int l, const Matrix<T>& h, LayerCache& c) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    Matrix<T> o2;
    blocks::linear::forward<T>(c.o, L.wo, L.bo, o2);
    c.h_mid = h + o2;
  }

  /// c.h_mid → c.act (the neuron vector: post- or pre-activation).
  void ffn_pre(int l, LayerCache& c) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    blocks::layer_norm::forward<T>(c.h_mid, L.ln2_g, L.ln2_b, eps(), c.f, c.n2);
    blocks::linear::forward<T>(c.f, L.w_fc, L.b_fc, c.pre);
    if constexpr (Site == NeuronSite::post_activation) {
      blocks::activation::forward<T>(act_, c.pre, c.post);
      c.act = c.post;
    } else {
      c.act = c.pre;
    }
  }

  /// c.act → h (the residual stream leaving layer l).
  void ffn_post(int l, LayerCache& c, Matrix<T>& h) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    if constexpr (Site == NeuronSite::pre_activation) {
      c.pre = c.act;
      blocks::activation::forward<T>(act_, c.pre, c.post);
    } else {
      c.post = c.act;
    }
    blocks::linear::forward<T>(c.post, L.w_proj, L.b_proj, c.down);
    h = c.h_mid + c.down;
  }

  /// dL/d(h leaving layer l) → dL/d(h_mid); with `d_act`, stops at the neuron site instead.
  Matrix<T> ffn_backward(int l, const LayerCache& c, const Matrix<T>& dh, Matrix<T>* d_act) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    Matrix<T> d_post, d_pre;
    blocks::linear::backward<T>(dh, L.w_proj, d_post);
    if (d_act && Site == NeuronSite::post_activation) {
      *d_act = std::move(d_post);
      return {};
    }
    blocks::activation::backward<T>(act_, d_post, c.pre, d_pre);
    if (d_act) {
      *d_act = std::move(d_pre);
      return {};
    }
    Matrix<T> df, dmid;
    blocks::linear::backward<T>(d_pre, L.w_fc, df);
    blocks::layer_norm::backward<T>(df, L.ln2_g, c.n2, dmid);
    return dh + dmid;
  }

  /// dL/d(h_mid) → dL/d(c.o), back through the output projection.
  Matrix<T> attention_out_backward(int l, const LayerCache&, const Matrix<T>& dmid) const {
    Matrix<T> d_o;
    blocks::linear::backward<T>(dmid, w_.layers[static_cast<std::size_t>(l)].wo, d_o);
    return d_o;
  }

  /// (dq, dk, dv) of the rows' own queries, keys and values → dL/dh through the projections
  /// and LN₁.
  Matrix<T> attention_in_backward(int l, std::span<const int>, const LayerCache& c,
                                  const Matrix<T>& dq, const Matrix<T>& dk,
                                  const Matrix<T>& dv) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    Matrix<T> da;
    blocks::linear::backward<T>(dq, L.wq, da);
    blocks::linear::backward_add<T>(dk, L.wk, da);
    blocks::linear::backward_add<T>(dv, L.wv, da);
    Matrix<T> dh;
    blocks::layer_norm::backward<T>(da, L.ln1_g, c.n1, dh);
    return dh;
  }

  /// Width of a cached key / value row.
  int kv_width() const { return hidden_size(); }
  /// Bytes one row keeps in a forward LayerCache, attending over kv_len keys.
  double row_bytes(double kv_len) const {
    const double d = hidden_size(), H = w_.config.n_head;
    return sizeof(T) * (8.0 * d + 2.0 * d * (1.0 + kv_len) + H * kv_len + 5.0 * ffn_width());
  }
  /// Bytes one traced row keeps (resid_mid, keys, values, activations of every layer).
  double trace_row_bytes() const {
    return sizeof(T) * num_layers() * (3.0 * hidden_size() + ffn_width());
  }

  Gpt2Weights<T> w_;
  blocks::Activation act_ = blocks::Activation::gelu_tanh;
};

template <class T, NeuronSite Site>
struct ArchTraits<Gpt2Model<T, Site>> {
  static constexpr Objective objective = Objective::causal_lm;
  static constexpr FfnLayout ffn_layout = FfnLayout::dense;
  static constexpr NeuronSite neuron_site = Site;
};

#if KNPROBE_EXTERN_TEMPLATES
// Compiled once in knprobe_instances for knprobe's own targets (see llama.hpp).
extern template class detail::CausalDecoder<Gpt2Model<float, NeuronSite::post_activation>, float>;
extern template class detail::CausalDecoder<Gpt2Model<double, NeuronSite::post_activation>, double>;
extern template class detail::CausalDecoder<Gpt2Model<float, NeuronSite::pre_activation>, float>;
extern template class detail::CausalDecoder<Gpt2Model<double, NeuronSite::pre_activation>, double>;
extern template class Gpt2Model<float, NeuronSite::post_activation>;
extern template class Gpt2Model<double, NeuronSite::post_activation>;
extern template class Gpt2Model<float, NeuronSite::pre_activation>;
extern template class Gpt2Model<double, NeuronSite::pre_activation>;
#endif

}  // namespace knprobe
