#pragma once
// BERT masked LM (BertForMaskedLM) on the CPU, implementing ProbeableModel. Rows = positions:
//   h₀ = LN_e(E[ids] + P[0..T) + S[0])                         (token type 0 throughout)
//   layer i (post-LN):  q, k, v = h Wqᵀ + b_q, …;  o = Attention(q, k, v; bidirectional) Woᵀ + b_o
//                       h₁ = LN_a(h + o);  u = gelu(h₁ W_iᵀ + b_i)      ← the FFN neurons
//                       h = LN_o(h₁ + u W_oᵀ + b_o')
//   MLM head:  x = LN_t(gelu(h Wtᵀ + b_t));  logits = x Eᵀ + b_dec       (decoder tied to E)
//
// Attention is bidirectional, so replacing the layer-l activation at one position changes every
// position above layer l: `layer_gradients` recomputes all positions of layers > l for each point
// (batched as B sequences), but starts from the trace's cached layer-l outputs and only evaluates
// the MLM head at the queried [MASK] row.

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
struct BertLayerWeights {
  Matrix<T> wq, wk, wv, wo;  ///< [d × d]
  Vector<T> bq, bk, bv, bo;  ///< [d]
  Vector<T> ln_a_g, ln_a_b;  ///< attention output LayerNorm [d]
  Matrix<T> w_in, w_out;     ///< intermediate [ffn × d], output [d × ffn]
  Vector<T> b_in, b_out;     ///< [ffn], [d]
  Vector<T> ln_o_g, ln_o_b;  ///< output LayerNorm [d]
};

namespace detail {
/// Calls f(name, rows, cols, the member of each of `ws`...) for every tensor of BERT weights,
/// with the shape `c` gives it (a vector has cols = 1) and layers 0..n_layers: the one place that
/// pairs BertWeights' members with their names and shapes (validation and casts go through it).
template <class F, class... W>
void for_each_bert_tensor(const io::BertConfig& c, std::size_t n_layers, F&& f, W&... ws) {
  const Index d = c.hidden_size, ff = c.intermediate_size;
  const std::string e = "embeddings.", h = "cls.predictions.";
  f(e + "word_embeddings.weight", c.vocab_size, d, ws.word...);
  f(e + "position_embeddings.weight", c.max_position_embeddings, d, ws.position...);
  f(e + "token_type_embeddings.weight", c.type_vocab_size, d, ws.token_type...);
  f(e + "LayerNorm.weight", d, 1, ws.ln_e_g...);
  f(e + "LayerNorm.bias", d, 1, ws.ln_e_b...);
  for (std::size_t i = 0; i < n_layers; ++i) {
    const std::string b = "encoder.layer." + std::to_string(i) + ".";
    f(b + "attention.self.query.weight", d, d, ws.layers[i].wq...);
    f(b + "attention.self.query.bias", d, 1, ws.layers[i].bq...);
    f(b + "attention.self.key.weight", d, d, ws.layers[i].wk...);
    f(b + "attention.self.key.bias", d, 1, ws.layers[i].bk...);
    f(b + "attention.self.value.weight", d, d, ws.layers[i].wv...);
    f(b + "attention.self.value.bias", d, 1, ws.layers[i].bv...);
    f(b + "attention.output.dense.weight", d, d, ws.layers[i].wo...);
    f(b + "attention.output.dense.bias", d, 1, ws.layers[i].bo...);
    f(b + "attention.output.LayerNorm.weight", d, 1, ws.layers[i].ln_a_g...);
    f(b + "attention.output.LayerNorm.bias", d, 1, ws.layers[i].ln_a_b...);
    f(b + "intermediate.dense.weight", ff, d, ws.layers[i].w_in...);
    f(b + "intermediate.dense.bias", ff, 1, ws.layers[i].b_in...);
    f(b + "output.dense.weight", d, ff, ws.layers[i].w_out...);
    f(b + "output.dense.bias", d, 1, ws.layers[i].b_out...);
    f(b + "output.LayerNorm.weight", d, 1, ws.layers[i].ln_o_g...);
    f(b + "output.LayerNorm.bias", d, 1, ws.layers[i].ln_o_b...);
  }
  f(h + "transform.dense.weight", d, d, ws.head_w...);
  f(h + "transform.dense.bias", d, 1, ws.head_b...);
  f(h + "transform.LayerNorm.weight", d, 1, ws.ln_t_g...);
  f(h + "transform.LayerNorm.bias", d, 1, ws.ln_t_b...);
  f(h + "bias", c.vocab_size, 1, ws.decoder_bias...);
}
}  // namespace detail

template <class T>
struct BertWeights {
  io::BertConfig config;
  Matrix<T> word, position, token_type;  ///< [V × d], [P × d], [types × d]
  Vector<T> ln_e_g, ln_e_b;              ///< embedding LayerNorm [d]
  std::vector<BertLayerWeights<T>> layers;
  Matrix<T> head_w;                  ///< MLM transform dense [d × d]
  Vector<T> head_b, ln_t_g, ln_t_b;  ///< [d]
  Vector<T> decoder_bias;            ///< [V]

  /// The same weights in another scalar type (tests run the model in double).
  template <class U>
  BertWeights<U> cast() const {
    BertWeights<U> o;
    o.config = config;
    o.layers.resize(layers.size());
    detail::for_each_bert_tensor(
        config, layers.size(),
        [](const auto&, Index, Index, const auto& in, auto& out) { out = in.template cast<U>(); },
        *this, o);
    return o;
  }

  /// Throws ShapeError naming the first tensor whose shape disagrees with `config` (or a config
  /// no BERT can have), FormatError for an activation it does not implement.
  void validate() const {
    const auto& c = config;
    KNPROBE_REQUIRE(c.num_hidden_layers > 0 && c.hidden_size > 0 && c.num_attention_heads > 0 &&
                        c.hidden_size % c.num_attention_heads == 0 && c.vocab_size > 0 &&
                        c.max_position_embeddings > 0 && c.type_vocab_size > 0 &&
                        c.intermediate_size > 0 && c.layer_norm_eps > 0,
                    ShapeError, "bert: invalid config (num_hidden_layers ", c.num_hidden_layers,
                    ", hidden_size ", c.hidden_size, ", num_attention_heads ",
                    c.num_attention_heads, ", vocab_size ", c.vocab_size,
                    ", max_position_embeddings ", c.max_position_embeddings, ", type_vocab_size ",
                    c.type_vocab_size, ", intermediate_size ", c.intermediate_size,
                    ", layer_norm_eps ", c.layer_norm_eps, ")");
    KNPROBE_REQUIRE(
        c.hidden_act == "gelu" || c.hidden_act == "gelu_new" || c.hidden_act == "gelu_pytorch_tanh",
        FormatError, "bert: hidden_act '", c.hidden_act, "' not supported");
    KNPROBE_REQUIRE(static_cast<int>(layers.size()) == c.num_hidden_layers, ShapeError,
                    "bert: ", layers.size(),
                    " layers for num_hidden_layers = ", c.num_hidden_layers);
    detail::for_each_bert_tensor(
        c, layers.size(),
        [](const std::string& name, Index rows, Index cols, const auto& x) {
          const std::string what = "bert " + name;
          if constexpr (std::is_same_v<std::decay_t<decltype(x)>, Vector<T>>)
            detail::require_size(x, rows, what.c_str());
          else
            detail::require_shape(x, rows, cols, what.c_str());
        },
        *this);
  }
};

/// Reads a Hugging Face BertForMaskedLM directory (config.json + safetensors). LayerNorm
/// parameters may be named weight/bias or gamma/beta; every shape is checked against the config.
inline BertWeights<float> load_bert_safetensors(const std::filesystem::path& dir) {
  BertWeights<float> w;
  w.config = io::read_bert_config(dir / "config.json");
  const auto& c = w.config;
  KNPROBE_REQUIRE(
      c.hidden_act == "gelu" || c.hidden_act == "gelu_new" || c.hidden_act == "gelu_pytorch_tanh",
      FormatError, dir.string(), ": hidden_act '", c.hidden_act, "' not supported");
  const io::SafetensorsCheckpoint ck(dir);
  const detail::CheckpointReader r(ck);
  const Index d = c.hidden_size, f = c.intermediate_size;
  auto ln = [&](const std::string& base, Vector<float>& g, Vector<float>& b) {
    const bool old = r.contains(base + ".gamma");
    g = r.vector(base + (old ? ".gamma" : ".weight"), d);
    b = r.vector(base + (old ? ".beta" : ".bias"), d);
  };
  const std::string e = "bert.embeddings.";
  w.word = r.matrix(e + "word_embeddings.weight", c.vocab_size, d);
  w.position = r.matrix(e + "position_embeddings.weight", c.max_position_embeddings, d);
  w.token_type = r.matrix(e + "token_type_embeddings.weight", c.type_vocab_size, d);
  ln(e + "LayerNorm", w.ln_e_g, w.ln_e_b);
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string b = "bert.encoder.layer." + std::to_string(i) + ".";
    BertLayerWeights<float> l;
    l.wq = r.matrix(b + "attention.self.query.weight", d, d);
    l.bq = r.vector(b + "attention.self.query.bias", d);
    l.wk = r.matrix(b + "attention.self.key.weight", d, d);
    l.bk = r.vector(b + "attention.self.key.bias", d);
    l.wv = r.matrix(b + "attention.self.value.weight", d, d);
    l.bv = r.vector(b + "attention.self.value.bias", d);
    l.wo = r.matrix(b + "attention.output.dense.weight", d, d);
    l.bo = r.vector(b + "attention.output.dense.bias", d);
    ln(b + "attention.output.LayerNorm", l.ln_a_g, l.ln_a_b);
    l.w_in = r.matrix(b + "intermediate.dense.weight", f, d);
    l.b_in = r.vector(b + "intermediate.dense.bias", f);
    l.w_out = r.matrix(b + "output.dense.weight", d, f);
    l.b_out = r.vector(b + "output.dense.bias", d);
    ln(b + "output.LayerNorm", l.ln_o_g, l.ln_o_b);
    w.layers.push_back(std::move(l));
  }
  const std::string h = "cls.predictions.";
  w.head_w = r.matrix(h + "transform.dense.weight", d, d);
  w.head_b = r.vector(h + "transform.dense.bias", d);
  ln(h + "transform.LayerNorm", w.ln_t_g, w.ln_t_b);
  w.decoder_bias = r.vector(r.contains(h + "bias") ? h + "bias" : h + "decoder.bias", c.vocab_size);
  if (r.contains(h + "decoder.weight")) {
    const MatrixF dec = r.matrix(h + "decoder.weight", c.vocab_size, d);
    KNPROBE_REQUIRE(dec == w.word, FormatError, dir.string(),
                    ": cls.predictions.decoder.weight differs from the word embeddings (untied "
                    "MLM decoders are not supported)");
  }
  return w;
}

template <class T = float>
class BertModel {
 public:
  using Scalar = T;

  /// One forward pass: the hidden states entering every layer and leaving the last
  /// (`hidden[l]`, l = 0..L), the post-attention states h₁ and the FFN neuron activations.
  struct Trace {
    std::vector<TokenId> tokens;
    std::vector<Matrix<T>> hidden, h1, acts;  // [L+1], [L], [L], each [T × ·]
    ConstMatrixRef<T> activations(int layer) const {
      return acts.at(static_cast<std::size_t>(layer));
    }
    int num_tokens() const { return static_cast<int>(tokens.size()); }
  };

  explicit BertModel(BertWeights<T> w) : w_(std::move(w)) {
    const auto& c = w_.config;
    act_ = c.hidden_act == "gelu" ? blocks::Activation::gelu_erf : blocks::Activation::gelu_tanh;
    w_.validate();
  }

  /// A Hugging Face BertForMaskedLM directory.
  static BertModel load(const std::filesystem::path& dir) {
    auto w = load_bert_safetensors(dir);
    if constexpr (std::is_same_v<T, float>)
      return BertModel(std::move(w));
    else
      return BertModel(w.template cast<T>());
  }

  int num_layers() const { return w_.config.num_hidden_layers; }
  /// Longest token sequence accepted (max_position_embeddings).
  int max_positions() const { return w_.config.max_position_embeddings; }
  int ffn_width() const { return w_.config.intermediate_size; }
  int hidden_size() const { return w_.config.hidden_size; }
  int vocab_size() const { return w_.config.vocab_size; }
  const BertWeights<T>& weights() const { return w_; }

  Trace trace(std::span<const TokenId> tokens) const {
    KNPROBE_REQUIRE(!tokens.empty(), ArgumentError, "bert: empty token sequence");
    KNPROBE_REQUIRE(static_cast<int>(tokens.size()) <= w_.config.max_position_embeddings,
                    ArgumentError, "bert: ", tokens.size(),
                    " tokens exceed max_position_embeddings = ", w_.config.max_position_embeddings);
    Trace t;
    t.tokens.assign(tokens.begin(), tokens.end());
    const int n = static_cast<int>(tokens.size());
    Matrix<T> e(n, hidden_size()), h;
    for (int i = 0; i < n; ++i) {
      check_token(tokens[static_cast<std::size_t>(i)]);
      e.row(i) = w_.word.row(tokens[static_cast<std::size_t>(i)]) + w_.position.row(i) +
                 w_.token_type.row(0);
    }
    blocks::layer_norm::Cache<T> nc;
    blocks::layer_norm::forward<T>(e, w_.ln_e_g, w_.ln_e_b, eps(), h, nc);
    for (int l = 0; l < num_layers(); ++l) {
      t.hidden.push_back(h);
      LayerCache c;
      attention_forward(l, 1, n, h, c);
      t.h1.push_back(c.h1);
      ffn_pre(l, c);
      t.acts.push_back(c.site);
      ffn_post(l, c, h);
    }
    t.hidden.push_back(std::move(h));
    return t;
  }

  /// MLM logits [T × V] of every position.
  Matrix<T> logits(const Trace& t) const {
    HeadCache hc;
    return head_forward(t.hidden.back(), hc);
  }
  /// The rows of logits(t) at `positions`: the MLM head on those rows only.
  Matrix<T> logits(const Trace& t, std::span<const int> positions) const {
    Matrix<T> x(Index(positions.size()), hidden_size());
    for (std::size_t k = 0; k < positions.size(); ++k) {
      check_position(t, positions[k]);
      x.row(Index(k)) = t.hidden.back().row(positions[k]);
    }
    HeadCache hc;
    return head_forward(x, hc);
  }

  T probability(const Trace& t, int position, TokenId target) const {
    check_position(t, position);
    check_token(target);
    HeadCache hc;
    const Matrix<T> z = head_forward(t.hidden.back().row(position), hc);
    return softmax_at(z, 0, target);
  }

  /// P(target at p) and dP/dh for h = each row of `points` replacing the layer-l neuron vector at
  /// position p. Layer l's output changes in row p only; every layer above is recomputed for all
  /// positions (bidirectional attention) and backpropagated, activation gradients only.
  LayerGradients<T> layer_gradients(const Trace& t, int layer, int p, const Matrix<T>& points,
                                    TokenId target) const {
    check_layer(layer);
    check_position(t, p);
    check_token(target);
    detail::require_cols(points, ffn_width(), "layer_gradients points");
    KNPROBE_REQUIRE(points.rows() > 0, ArgumentError, "layer_gradients: no points");
    const int B = static_cast<int>(points.rows()), n = t.num_tokens();
    const auto& L = w_.layers[static_cast<std::size_t>(layer)];
    // Layer l, row p only: y = LN_o(h₁[p] + u W_oᵀ + b).
    Matrix<T> down, y;
    blocks::linear::forward<T>(points, L.w_out, L.b_out, down);
    down.rowwise() += t.h1[static_cast<std::size_t>(layer)].row(p);
    blocks::layer_norm::Cache<T> n0;
    blocks::layer_norm::forward<T>(down, L.ln_o_g, L.ln_o_b, eps(), y, n0);
    Matrix<T> h = t.hidden[static_cast<std::size_t>(layer) + 1].replicate(B, 1);
    for (int b = 0; b < B; ++b) h.row(Index(b) * n + p) = y.row(b);
    std::vector<LayerCache> caches(static_cast<std::size_t>(num_layers() - layer - 1));
    for (int l = layer + 1; l < num_layers(); ++l) {
      LayerCache& c = caches[static_cast<std::size_t>(l - layer - 1)];
      attention_forward(l, B, n, h, c);
      ffn_pre(l, c);
      ffn_post(l, c, h);
    }
    Matrix<T> hp(B, hidden_size());
    for (int b = 0; b < B; ++b) hp.row(b) = h.row(Index(b) * n + p);
    HeadCache hc;
    Matrix<T> z = head_forward(hp, hc);
    LayerGradients<T> out;
    const std::vector<TokenId> targets(static_cast<std::size_t>(B), target);
    out.probabilities = blocks::softmax::target_probability_gradient<T>(z, targets);
    const Matrix<T> dhp = head_backward(z, hc);
    Matrix<T> dh = Matrix<T>::Zero(Index(B) * n, hidden_size());
    for (int b = 0; b < B; ++b) dh.row(Index(b) * n + p) = dhp.row(b);
    for (int l = num_layers() - 1; l > layer; --l)
      dh = layer_backward(l, B, n, caches[static_cast<std::size_t>(l - layer - 1)], dh);
    Matrix<T> dy(B, hidden_size()), dsum;
    for (int b = 0; b < B; ++b) dy.row(b) = dh.row(Index(b) * n + p);
    blocks::layer_norm::backward<T>(dy, L.ln_o_g, n0, dsum);
    blocks::linear::backward<T>(dsum, L.w_out, out.gradients);
    return out;
  }

  /// [patterns × queries] probabilities; each pattern reruns layers from the lowest intervened
  /// one for every position (bidirectional), all patterns as one batch.
  Matrix<T> probabilities(std::span<const TokenId> tokens,
                          std::span<const InterventionPattern> patterns,
                          std::span<const Query> queries) const {
    return probabilities(trace(tokens), patterns, queries);
  }

  Matrix<T> probabilities(const Trace& t, std::span<const InterventionPattern> patterns,
                          std::span<const Query> queries) const {
    const int P = static_cast<int>(patterns.size()), Q = static_cast<int>(queries.size());
    const int n = t.num_tokens();
    Matrix<T> out(P, Q);
    const int l0 =
        detail::intervention_extent(patterns, num_layers(), n, [&](const Intervention& iv) {
          check_layer(iv.layer);
          check_position(t, iv.position);
          check_unit(iv.unit);
        }).layer;
    for (const auto& q : queries) check_position(t, q.position), check_token(q.target);
    if (P == 0 || Q == 0) return out;
    Matrix<T> h = t.hidden[static_cast<std::size_t>(l0)].replicate(P, 1);
    for (int l = l0; l < num_layers(); ++l) {
      LayerCache c;
      attention_forward(l, P, n, h, c);
      ffn_pre(l, c);
      detail::apply_interventions(l, patterns, n, 0, c.site);
      ffn_post(l, c, h);
    }
    for (int qi = 0; qi < Q; ++qi) {
      const auto& q = queries[static_cast<std::size_t>(qi)];
      Matrix<T> hq(P, hidden_size());
      for (int b = 0; b < P; ++b) hq.row(b) = h.row(Index(b) * n + q.position);
      HeadCache hc;
      const Matrix<T> z = head_forward(hq, hc);
      for (int b = 0; b < P; ++b) out(b, qi) = softmax_at(z, b, q.target);
    }
    return out;
  }

  /// Column `unit` of layer `layer`'s output dense: the vector the neuron writes (before LN_o).
  Vector<T> value_vector(int layer, int unit) const {
    check_layer(layer);
    check_unit(unit);
    return w_.layers[static_cast<std::size_t>(layer)].w_out.col(unit);
  }
  void set_value_vector(int layer, int unit, const Vector<T>& v) {
    check_layer(layer);
    check_unit(unit);
    detail::require_size(v, hidden_size(), "set_value_vector v");
    w_.layers[static_cast<std::size_t>(layer)].w_out.col(unit) = v;
  }
  Vector<T> token_embedding(TokenId id) const {
    check_token(id);
    return w_.word.row(id).transpose();
  }

 private:
  struct LayerCache {
    Matrix<T> h_in, q, k, v, o, h1, pre, site, down;
    blocks::attention::Cache<T> attn;
    blocks::layer_norm::Cache<T> n_a, n_o;
  };
  struct HeadCache {
    Matrix<T> u, g;
    blocks::layer_norm::Cache<T> n;
  };

  T eps() const { return static_cast<T>(w_.config.layer_norm_eps); }
  void check_layer(int l) const { detail::check_layer_index(l, num_layers()); }
  void check_unit(int u) const { detail::check_unit_index(u, ffn_width()); }
  void check_position(const Trace& t, int p) const {
    detail::check_position_index(p, t.num_tokens());
  }
  void check_token(TokenId id) const { detail::check_token_id(id, vocab_size()); }
  static T softmax_at(const Matrix<T>& z, int row, TokenId target) {
    return blocks::softmax::probability<T>(z, row, target);
  }

  blocks::attention::Shape attention_shape(int batch, int n) const {
    blocks::attention::Shape sh;
    sh.batch = batch;
    sh.q_len = sh.kv_len = n;
    sh.n_heads = sh.n_kv_heads = w_.config.num_attention_heads;
    sh.head_dim = hidden_size() / w_.config.num_attention_heads;
    sh.mask = blocks::attention::Mask::bidirectional;
    sh.scale = 1.0 / std::sqrt(static_cast<double>(sh.head_dim));
    return sh;
  }

  /// x [R × d] → logits [R × V] through the MLM transform and the tied decoder.
  Matrix<T> head_forward(ConstMatrixRef<T> x, HeadCache& hc) const {
    Matrix<T> y;
    blocks::linear::forward<T>(x, w_.head_w, w_.head_b, hc.u);
    blocks::activation::forward<T>(act_, hc.u, hc.g);
    blocks::layer_norm::forward<T>(hc.g, w_.ln_t_g, w_.ln_t_b, eps(), y, hc.n);
    Matrix<T> z = y * w_.word.transpose();
    z.rowwise() += w_.decoder_bias.transpose();
    return z;
  }
  /// dL/dlogits → dL/dx.
  Matrix<T> head_backward(const Matrix<T>& dz, const HeadCache& hc) const {
    const Matrix<T> dy = dz * w_.word;
    Matrix<T> dg, du, dx;
    blocks::layer_norm::backward<T>(dy, w_.ln_t_g, hc.n, dg);
    blocks::activation::backward<T>(act_, dg, hc.u, du);
    blocks::linear::backward<T>(du, w_.head_w, dx);
    return dx;
  }

  /// h [batch·n × d] → c.h1 = LN_a(h + attention).
  void attention_forward(int l, int batch, int n, const Matrix<T>& h, LayerCache& c) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    c.h_in = h;
    blocks::linear::forward<T>(h, L.wq, L.bq, c.q);
    blocks::linear::forward<T>(h, L.wk, L.bk, c.k);
    blocks::linear::forward<T>(h, L.wv, L.bv, c.v);
    blocks::attention::forward<T>(c.q, c.k, c.v, attention_shape(batch, n), c.o, c.attn);
    Matrix<T> o2;
    blocks::linear::forward<T>(c.o, L.wo, L.bo, o2);
    o2 += h;
    blocks::layer_norm::forward<T>(o2, L.ln_a_g, L.ln_a_b, eps(), c.h1, c.n_a);
  }
  /// c.h1 → c.site = gelu(h₁ W_iᵀ + b_i).
  void ffn_pre(int l, LayerCache& c) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    blocks::linear::forward<T>(c.h1, L.w_in, L.b_in, c.pre);
    blocks::activation::forward<T>(act_, c.pre, c.site);
  }
  /// c.site → h = LN_o(h₁ + site W_oᵀ + b_o).
  void ffn_post(int l, LayerCache& c, Matrix<T>& h) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    blocks::linear::forward<T>(c.site, L.w_out, L.b_out, c.down);
    c.down += c.h1;
    blocks::layer_norm::forward<T>(c.down, L.ln_o_g, L.ln_o_b, eps(), h, c.n_o);
  }
  /// dL/d(h leaving layer l) → dL/d(h entering it), every position.
  Matrix<T> layer_backward(int l, int batch, int n, const LayerCache& c,
                           const Matrix<T>& dh) const {
    const auto& L = w_.layers[static_cast<std::size_t>(l)];
    Matrix<T> ds, d_site, d_pre, dh1, dr, d_o, dq, dk, dv;
    blocks::layer_norm::backward<T>(dh, L.ln_o_g, c.n_o, ds);
    blocks::linear::backward<T>(ds, L.w_out, d_site);
    blocks::activation::backward<T>(act_, d_site, c.pre, d_pre);
    dh1 = ds;
    dh1.noalias() += d_pre * L.w_in;
    blocks::layer_norm::backward<T>(dh1, L.ln_a_g, c.n_a, dr);
    blocks::linear::backward<T>(dr, L.wo, d_o);
    blocks::attention::backward<T>(d_o, c.q, c.k, c.v, attention_shape(batch, n), c.attn, dq, dk,
                                   dv);
    Matrix<T> dx = dr;
    dx.noalias() += dq * L.wq;
    dx.noalias() += dk * L.wk;
    dx.noalias() += dv * L.wv;
    return dx;
  }

  BertWeights<T> w_;
  blocks::Activation act_ = blocks::Activation::gelu_erf;
};

template <class T>
struct ArchTraits<BertModel<T>> {
  static constexpr Objective objective = Objective::masked_lm;
  static constexpr FfnLayout ffn_layout = FfnLayout::dense;
  static constexpr NeuronSite neuron_site = NeuronSite::post_activation;
};

#if KNPROBE_EXTERN_TEMPLATES
// Compiled once in knprobe_instances for knprobe's own targets (see llama.hpp).
extern template class BertModel<float>;
extern template class BertModel<double>;
#endif

}  // namespace knprobe
