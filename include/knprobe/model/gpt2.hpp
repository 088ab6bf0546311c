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
// As for every causal model, `layer_gradients` recomputes only position p above layer l against
// the trace's cached keys and values.

#include <algorithm>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "knprobe/io/hf_config.hpp"
#include "knprobe/model/backend_support.hpp"
#include "knprobe/model/blocks/activation.hpp"
#include "knprobe/model/blocks/attention.hpp"
#include "knprobe/model/blocks/layer_norm.hpp"
#include "knprobe/model/blocks/linear.hpp"
#include "knprobe/model/blocks/softmax.hpp"
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
    o.wte = wte.template cast<U>();
    o.wpe = wpe.template cast<U>();
    o.lnf_g = lnf_g.template cast<U>();
    o.lnf_b = lnf_b.template cast<U>();
    for (const auto& l : layers) {
      Gpt2LayerWeights<U> x;
      x.ln1_g = l.ln1_g.template cast<U>();
      x.ln1_b = l.ln1_b.template cast<U>();
      x.wq = l.wq.template cast<U>();
      x.wk = l.wk.template cast<U>();
      x.wv = l.wv.template cast<U>();
      x.wo = l.wo.template cast<U>();
      x.bq = l.bq.template cast<U>();
      x.bk = l.bk.template cast<U>();
      x.bv = l.bv.template cast<U>();
      x.bo = l.bo.template cast<U>();
      x.ln2_g = l.ln2_g.template cast<U>();
      x.ln2_b = l.ln2_b.template cast<U>();
      x.w_fc = l.w_fc.template cast<U>();
      x.w_proj = l.w_proj.template cast<U>();
      x.b_fc = l.b_fc.template cast<U>();
      x.b_proj = l.b_proj.template cast<U>();
      o.layers.push_back(std::move(x));
    }
    return o;
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
class Gpt2Model {
  static_assert(Site == NeuronSite::post_activation || Site == NeuronSite::pre_activation,
                "GPT-2 neurons are post- or pre-activation");

 public:
  using Scalar = T;

  /// One forward pass kept for reuse: the residual stream after each layer's attention add, the
  /// neuron-site activations, keys / values of every layer, and the final normed hidden state.
  struct Trace {
    std::vector<TokenId> tokens;
    std::vector<Matrix<T>> resid_mid, acts, keys, values;  // [L] each [T × ·]
    Matrix<T> final_hidden;                                // [T × d]
    ConstMatrixRef<T> activations(int layer) const {
      return acts.at(static_cast<std::size_t>(layer));
    }
    int num_tokens() const { return static_cast<int>(tokens.size()); }
  };

  explicit Gpt2Model(Gpt2Weights<T> w) : w_(std::move(w)) {
    const auto& c = w_.config;
    act_ = c.activation_function == "gelu" ? blocks::Activation::gelu_erf
                                           : blocks::Activation::gelu_tanh;
    KNPROBE_REQUIRE(static_cast<int>(w_.layers.size()) == c.n_layer, ShapeError,
                    "gpt2: ", w_.layers.size(), " layers for n_layer = ", c.n_layer);
    detail::require_shape(w_.wte, c.vocab_size, c.n_embd, "gpt2 wte");
    detail::require_shape(w_.wpe, c.n_positions, c.n_embd, "gpt2 wpe");
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
  int max_positions() const { return w_.config.n_positions; }
  const Gpt2Weights<T>& weights() const { return w_; }

  Trace trace(std::span<const TokenId> tokens) const {
    KNPROBE_REQUIRE(!tokens.empty(), ArgumentError, "gpt2: empty token sequence");
    KNPROBE_REQUIRE(static_cast<int>(tokens.size()) <= max_positions(), ArgumentError,
                    "gpt2: ", tokens.size(), " tokens exceed n_positions = ", max_positions());
    Trace t;
    t.tokens.assign(tokens.begin(), tokens.end());
    const int n = static_cast<int>(tokens.size());
    Matrix<T> h(n, hidden_size());
    for (int i = 0; i < n; ++i) {
      check_token(tokens[static_cast<std::size_t>(i)]);
      h.row(i) = w_.wte.row(tokens[static_cast<std::size_t>(i)]) + w_.wpe.row(i);
    }
    for (int l = 0; l < num_layers(); ++l) {
      LayerCache c;
      attention_forward(l, Rows{1, n, 0}, h, nullptr, c);
      t.resid_mid.push_back(c.h_mid);
      t.keys.push_back(c.k_new);
      t.values.push_back(c.v_new);
      ffn_pre(l, c);
      t.acts.push_back(c.site);
      ffn_post(l, c, h);
    }
    blocks::layer_norm::Cache<T> nc;
    blocks::layer_norm::forward<T>(h, w_.lnf_g, w_.lnf_b, eps(), t.final_hidden, nc);
    return t;
  }

  /// Logits [T × V] of the trace's positions.
  Matrix<T> logits(const Trace& t) const { return t.final_hidden * w_.wte.transpose(); }
  /// The rows of logits(t) at `positions`: the output head on those rows only.
  Matrix<T> logits(const Trace& t, std::span<const int> positions) const {
    Matrix<T> x(Index(positions.size()), hidden_size());
    for (std::size_t k = 0; k < positions.size(); ++k) {
      check_position(t, positions[k]);
      x.row(Index(k)) = t.final_hidden.row(positions[k]);
    }
    return x * w_.wte.transpose();
  }

  /// softmax(logits at `position`)[target].
  T probability(const Trace& t, int position, TokenId target) const {
    check_position(t, position);
    check_token(target);
    const Matrix<T> z = t.final_hidden.row(position) * w_.wte.transpose();
    return softmax_at(z, 0, target);
  }

  /// P(target at p) and dP/dh for h = each row of `points` replacing the layer-l neuron vector at
  /// position p; layers > l recompute row p only (the distribution at p is causal).
  LayerGradients<T> layer_gradients(const Trace& t, int layer, int position,
                                    const Matrix<T>& points, TokenId target) const {
    const LayerRequest<T> r{layer, position, points, target};
    return std::move(layer_gradients(t, std::span<const LayerRequest<T>>(&r, 1))[0]);
  }

  /// Several requests; all final hidden states share one output-head GEMM (≤ k_head_rows rows).
  std::vector<LayerGradients<T>> layer_gradients(const Trace& t,
                                                 std::span<const LayerRequest<T>> reqs) const {
    std::vector<LayerGradients<T>> out(reqs.size());
    detail::for_each_request_chunk(reqs, k_head_rows, [&](std::size_t begin, std::size_t n) {
      gradients_chunk(t, reqs.subspan(begin, n), std::span(out).subspan(begin, n));
    });
    return out;
  }

  /// [patterns × queries] probabilities under each pattern's interventions, one batched pass from
  /// the lowest intervened layer and position (earlier work is the clean trace's).
  Matrix<T> probabilities(std::span<const TokenId> tokens,
                          std::span<const InterventionPattern> patterns,
                          std::span<const Query> queries) const {
    return probabilities(trace(tokens), patterns, queries);
  }

  Matrix<T> probabilities(const Trace& t, std::span<const InterventionPattern> patterns,
                          std::span<const Query> queries) const {
    const int P = static_cast<int>(patterns.size()), Q = static_cast<int>(queries.size());
    Matrix<T> out(P, Q);
    int l0 = num_layers(), p0 = t.num_tokens();
    for (const auto& pat : patterns)
      for (const auto& iv : pat) {
        check_layer(iv.layer);
        check_position(t, iv.position);
        check_unit(iv.unit);
        l0 = std::min(l0, iv.layer);
        p0 = std::min(p0, iv.position);
      }
    for (const auto& q : queries) check_position(t, q.position), check_token(q.target);
    if (P == 0 || Q == 0) return out;
    const int S = t.num_tokens() - p0;
    const bool rerun = S > 0 && l0 < num_layers();
    Matrix<T> x;
    if (rerun) {
      const Rows rows{P, S, p0};
      LayerCache c;
      c.h_mid = t.resid_mid[static_cast<std::size_t>(l0)].middleRows(p0, S).replicate(P, 1);
      Matrix<T> h;
      for (int l = l0; l < num_layers(); ++l) {
        if (l > l0) attention_forward(l, rows, h, &t, c);
        ffn_pre(l, c);
        intervene(l, rows, patterns, c.site);
        ffn_post(l, c, h);
      }
      blocks::layer_norm::Cache<T> nc;
      blocks::layer_norm::forward<T>(h, w_.lnf_g, w_.lnf_b, eps(), x, nc);
    }
    for (int qi = 0; qi < Q; ++qi) {
      const auto& q = queries[static_cast<std::size_t>(qi)];
      Matrix<T> hid(P, hidden_size());
      for (int b = 0; b < P; ++b) {
        if (rerun && q.position >= p0)
          hid.row(b) = x.row(b * S + (q.position - p0));
        else
          hid.row(b) = t.final_hidden.row(q.position);
      }
      const Matrix<T> z = hid * w_.wte.transpose();
      for (int b = 0; b < P; ++b) out(b, qi) = softmax_at(z, b, q.target);
    }
    return out;
  }

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
  struct Rows {
    int batch, len, start;
  };
  struct LayerCache {
    Matrix<T> h_in, a, q, k_new, v_new, k_full, v_full, o, h_mid, f, pre, post, site, down;
    blocks::layer_norm::Cache<T> n1, n2;
    blocks::attention::Cache<T> attn;
  };
  static constexpr Index k_head_rows = 256;

  T eps() const { return static_cast<T>(w_.config.layer_norm_epsilon); }
  void check_layer(int l) const {
    KNPROBE_REQUIRE(l >= 0 && l < num_layers(), ArgumentError, "layer ", l, " outside [0, ",
                    num_layers(), ")");
  }
  void check_unit(int u) const {
    KNPROBE_REQUIRE(u >= 0 && u < ffn_width(), ArgumentError, "unit ", u, " outside [0, ",
                    ffn_width(), ")");
  }
  void check_position(const Trace& t, int p) const {
    KNPROBE_REQUIRE(p >= 0 && p < t.num_tokens(), ArgumentError, "position ", p, " outside [0, ",
                    t.num_tokens(), ")");
  }
  void check_token(TokenId id) const {
    KNPROBE_REQUIRE(id >= 0 && id < vocab_size(), ArgumentError, "token id ", id,
                    " outside the vocabulary [0, ", vocab_size(), ")");
  }
  static T softmax_at(const Matrix<T>& z, int row, TokenId target) {
    return blocks::softmax::probability<T>(z, row, target);
  }

  blocks::attention::Shape attention_shape(const Rows& r) const {
    blocks::attention::Shape sh;
    sh.batch = r.batch;
    sh.q_len = r.len;
    sh.kv_len = r.start + r.len;
    sh.q_offset = r.start;
    sh.n_heads = sh.n_kv_heads = w_.config.n_head;
    sh.head_dim = hidden_size() / w_.config.n_head;
    sh.mask = blocks::attention::Mask::causal;
    sh.scale = 1.0 / std::sqrt(static_cast<double>(sh.head_dim));
    return sh;
  }

  /// h (rows entering layer l) → c.h_mid. Keys / values of positions < r.start come from `prefix`.
  void attention_forward(int l, const Rows& r, const Matrix<T>& h, const Trace* prefix,
                         LayerCache& c) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    c.h_in = h;
    blocks::layer_norm::forward<T>(h, L.ln1_g, L.ln1_b, eps(), c.a, c.n1);
    blocks::linear::forward<T>(c.a, L.wq, L.bq, c.q);
    blocks::linear::forward<T>(c.a, L.wk, L.bk, c.k_new);
    blocks::linear::forward<T>(c.a, L.wv, L.bv, c.v_new);
    const int kv_len = r.start + r.len;
    if (r.start == 0) {
      c.k_full = c.k_new;
      c.v_full = c.v_new;
    } else {
      const Index d = c.k_new.cols();
      c.k_full.resize(Index(r.batch) * kv_len, d);
      c.v_full.resize(Index(r.batch) * kv_len, d);
      const auto& K = prefix->keys[static_cast<std::size_t>(l)];
      const auto& V = prefix->values[static_cast<std::size_t>(l)];
      for (int b = 0; b < r.batch; ++b) {
        c.k_full.middleRows(Index(b) * kv_len, r.start) = K.topRows(r.start);
        c.v_full.middleRows(Index(b) * kv_len, r.start) = V.topRows(r.start);
        c.k_full.middleRows(Index(b) * kv_len + r.start, r.len) =
            c.k_new.middleRows(Index(b) * r.len, r.len);
        c.v_full.middleRows(Index(b) * kv_len + r.start, r.len) =
            c.v_new.middleRows(Index(b) * r.len, r.len);
      }
    }
    blocks::attention::forward<T>(c.q, c.k_full, c.v_full, attention_shape(r), c.o, c.attn);
    Matrix<T> o2;
    blocks::linear::forward<T>(c.o, L.wo, L.bo, o2);
    c.h_mid = h + o2;
  }

  /// c.h_mid → c.site (the neuron vector: post- or pre-activation).
  void ffn_pre(int l, LayerCache& c) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    blocks::layer_norm::forward<T>(c.h_mid, L.ln2_g, L.ln2_b, eps(), c.f, c.n2);
    blocks::linear::forward<T>(c.f, L.w_fc, L.b_fc, c.pre);
    if constexpr (Site == NeuronSite::post_activation) {
      blocks::activation::forward<T>(act_, c.pre, c.post);
      c.site = c.post;
    } else {
      c.site = c.pre;
    }
  }

  /// c.site → h (the residual stream leaving layer l).
  void ffn_post(int l, LayerCache& c, Matrix<T>& h) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    if constexpr (Site == NeuronSite::pre_activation) {
      c.pre = c.site;
      blocks::activation::forward<T>(act_, c.pre, c.post);
    } else {
      c.post = c.site;
    }
    blocks::linear::forward<T>(c.post, L.w_proj, L.b_proj, c.down);
    h = c.h_mid + c.down;
  }

  /// dL/d(h leaving layer l) → dL/d(h_mid); with `d_site`, stops at the neuron site instead.
  Matrix<T> ffn_backward(int l, const LayerCache& c, const Matrix<T>& dh, Matrix<T>* d_site) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    Matrix<T> d_post, d_pre;
    blocks::linear::backward<T>(dh, L.w_proj, d_post);
    if (d_site && Site == NeuronSite::post_activation) {
      *d_site = std::move(d_post);
      return {};
    }
    blocks::activation::backward<T>(act_, d_post, c.pre, d_pre);
    if (d_site) {
      *d_site = std::move(d_pre);
      return {};
    }
    Matrix<T> df, dmid;
    blocks::linear::backward<T>(d_pre, L.w_fc, df);
    blocks::layer_norm::backward<T>(df, L.ln2_g, c.n2, dmid);
    return dh + dmid;
  }

  /// dL/d(h_mid) → dL/d(h entering layer l); cached prefix keys / values are constants.
  Matrix<T> attention_backward(int l, const Rows& r, const LayerCache& c,
                               const Matrix<T>& dmid) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    const auto sh = attention_shape(r);
    Matrix<T> d_o, dq, dk_full, dv_full;
    blocks::linear::backward<T>(dmid, L.wo, d_o);
    blocks::attention::backward<T>(d_o, c.q, c.k_full, c.v_full, sh, c.attn, dq, dk_full, dv_full);
    Matrix<T> da = dq * L.wq;
    for (int b = 0; b < r.batch; ++b) {
      const Index src = Index(b) * sh.kv_len + r.start, dst = Index(b) * r.len;
      da.middleRows(dst, r.len).noalias() += dk_full.middleRows(src, r.len) * L.wk;
      da.middleRows(dst, r.len).noalias() += dv_full.middleRows(src, r.len) * L.wv;
    }
    Matrix<T> dh;
    blocks::layer_norm::backward<T>(da, L.ln1_g, c.n1, dh);
    return dmid + dh;
  }

  void intervene(int l, const Rows& r, std::span<const InterventionPattern> patterns,
                 Matrix<T>& site) const {
    detail::apply_interventions(l, patterns.first(static_cast<std::size_t>(r.batch)), r.len,
                                r.start, site);
  }

  struct Pending {
    std::vector<LayerCache> caches;
    Matrix<T> h;
  };

  void gradients_chunk(const Trace& t, std::span<const LayerRequest<T>> reqs,
                       std::span<LayerGradients<T>> out) const {
    std::vector<Pending> pend(reqs.size());
    Index total = 0;
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      const auto& q = reqs[i];
      check_layer(q.layer);
      check_position(t, q.position);
      check_token(q.target);
      detail::require_cols(q.points, ffn_width(), "layer_gradients points");
      KNPROBE_REQUIRE(q.points.rows() > 0, ArgumentError, "layer_gradients: no points");
      const int B = static_cast<int>(q.points.rows());
      const Rows rows{B, 1, q.position};
      auto& p = pend[i];
      p.caches.resize(static_cast<std::size_t>(num_layers() - q.layer));
      LayerCache& c0 = p.caches[0];
      c0.h_mid = t.resid_mid[static_cast<std::size_t>(q.layer)].row(q.position).replicate(B, 1);
      c0.site = q.points;
      ffn_post(q.layer, c0, p.h);
      for (int l = q.layer + 1; l < num_layers(); ++l) {
        LayerCache& c = p.caches[static_cast<std::size_t>(l - q.layer)];
        attention_forward(l, rows, p.h, &t, c);
        ffn_pre(l, c);
        ffn_post(l, c, p.h);
      }
      total += B;
    }
    Matrix<T> h(total, hidden_size());
    std::vector<TokenId> target(static_cast<std::size_t>(total));
    Index at = 0;
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      h.middleRows(at, pend[i].h.rows()) = pend[i].h;
      std::fill_n(target.begin() + at, pend[i].h.rows(), reqs[i].target);
      at += pend[i].h.rows();
    }
    // Head once for every row: P_b and dP_b/dz = P_b (e_t − softmax(z_b)).
    blocks::layer_norm::Cache<T> nc;
    Matrix<T> x;
    blocks::layer_norm::forward<T>(h, w_.lnf_g, w_.lnf_b, eps(), x, nc);
    Matrix<T> z = x * w_.wte.transpose();
    const Vector<T> prob = blocks::softmax::target_probability_gradient<T>(z, target);
    const Matrix<T> dx = z * w_.wte;
    Matrix<T> dh_all;
    blocks::layer_norm::backward<T>(dx, w_.lnf_g, nc, dh_all);
    at = 0;
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      const auto& q = reqs[i];
      const int B = static_cast<int>(q.points.rows());
      const Rows rows{B, 1, q.position};
      Matrix<T> dh = dh_all.middleRows(at, B);
      out[i].probabilities = prob.segment(at, B);
      for (int l = num_layers() - 1; l > q.layer; --l) {
        const LayerCache& c = pend[i].caches[static_cast<std::size_t>(l - q.layer)];
        dh = attention_backward(l, rows, c, ffn_backward(l, c, dh, nullptr));
      }
      ffn_backward(q.layer, pend[i].caches[0], dh, &out[i].gradients);
      at += B;
    }
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
extern template class Gpt2Model<float, NeuronSite::post_activation>;
extern template class Gpt2Model<double, NeuronSite::post_activation>;
extern template class Gpt2Model<float, NeuronSite::pre_activation>;
extern template class Gpt2Model<double, NeuronSite::pre_activation>;
#endif

}  // namespace knprobe
