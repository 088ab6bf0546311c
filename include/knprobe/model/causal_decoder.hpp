#pragma once
// The CPU driver every causal decoder shares (LlamaModel, Gpt2Model): the whole ProbeableModel
// contract except what depends on the architecture — traces (one prompt or several stacked), the
// output head's probabilities and gradients, batched `layer_gradients` with shared upper layers,
// intervention passes (one prompt or stacked prompts), mean activations (the AMIG baseline), the
// cache budget, and the checks of every argument. Exactness rests on causality: changing the
// neuron site at position p of layer l cannot change positions < p, and the distribution at p
// depends on positions ≤ p only, so recomputation starts at the lowest intervened layer and
// position against the clean trace's cached keys and values.
//
// An architecture derives from CausalDecoder<Self, T> (declaring it a friend) and supplies, as
// llama.cpp's model files do with build_norm / build_attn / build_ffn, only its layer pieces:
//
//   sizes          num_layers(), ffn_width(), hidden_size(), vocab_size(), max_positions()
//   arch_name, context_name   static strings for messages ("gpt2", "n_positions")
//   LayerCache     a struct with at least h_mid, act, q, k_new, v_new, k_full, v_full, o, attn
//   NormCache      the final norm's cache
//   embed(ids, positions, h)                  h₀ rows of the tokens at their positions
//   attention_in(l, h, positions, c)          h → c.q, c.k_new, c.v_new (norm, projections, RoPE)
//   attention_shape(l)                        heads, head_dim, mask, window, scale of layer l
//   attention_out(l, h, c)                    c.o → c.h_mid = h + out(c.o)
//   ffn_pre(l, c)                             c.h_mid → c.act (the neuron site)
//   ffn_post(l, c, h)                         c.act → h, the residual stream leaving layer l
//   ffn_backward(l, c, dh, d_act)             dL/dh → dL/dh_mid (with d_act: stop at c.act)
//   attention_out_backward(l, c, dmid)        dL/dh_mid → dL/dc.o
//   attention_in_backward(l, pos, c, dq, dk, dv)  → dL/dh through the attention input only
//   final_norm(h, x, cache); final_norm_backward(dx, h, cache, dh)
//   head_weights()                            E [V × d], dense or QuantizedMatrix: logits x Eᵀ
//   row_bytes(kv_len), trace_row_bytes()      memory of one recomputed / one traced row
//   kv_width()                                width of a cached key / value row

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include "knprobe/model/backend_support.hpp"
#include "knprobe/model/blocks/attention.hpp"
#include "knprobe/model/blocks/linear.hpp"
#include "knprobe/model/blocks/output_head.hpp"
#include "knprobe/model/blocks/softmax.hpp"
#include "knprobe/model/concept.hpp"

namespace knprobe::detail {

/// One forward pass over a sequence, kept for reuse: the residual stream halfway through every
/// layer (`resid_mid`, after the attention add), the neuron-site activations, the keys and values
/// every later position attends to, and the final normed hidden state.
template <class T>
struct DecoderTrace {
  std::vector<TokenId> tokens;
  std::vector<Matrix<T>> resid_mid, acts, keys, values;  // [L] each [T × ·]
  Matrix<T> final_hidden;                                // [T × d], after the final norm
  ConstMatrixRef<T> activations(int layer) const {
    return acts.at(static_cast<std::size_t>(layer));
  }
  int num_tokens() const { return static_cast<int>(tokens.size()); }
};

template <class D, class T>
class CausalDecoder {
 public:
  using Scalar = T;
  using Trace = DecoderTrace<T>;

  /// Full forward over `tokens` (positions 0..T−1), caching what attribution reuses.
  Trace trace(std::span<const TokenId> tokens) const {
    const std::span<const TokenId> one[1] = {tokens};
    return std::move(trace_stack(one)[0]);
  }

  /// Logits [T × V] of the trace's positions.
  Matrix<T> logits(const Trace& t) const {
    check_trace(t);
    return head_forward(t.final_hidden);
  }
  /// The rows of logits(t) at `positions`: the output head on those rows only.
  Matrix<T> logits(const Trace& t, std::span<const int> positions) const {
    Matrix<T> x(Index(positions.size()), self().hidden_size());
    for (std::size_t k = 0; k < positions.size(); ++k) {
      check_position(t, positions[k]);
      x.row(Index(k)) = t.final_hidden.row(positions[k]);
    }
    return head_forward(x);
  }

  /// softmax(logits at `position`)[target] from a trace.
  T probability(const Trace& t, int position, TokenId target) const {
    check_position(t, position);
    check_token(target);
    const Matrix<T> z = head_forward(t.final_hidden.row(position));
    return blocks::softmax::probability<T>(z, 0, target);
  }

  /// P(target at p) and dP/dh for h = each row of `points` replacing the layer-l neuron vector at
  /// position p. Layers < l come from the trace; layers > l recompute row p only (exact: the
  /// distribution at p is causal). Backward: through the output head's full softmax
  /// (dP/dz = P(e_t − softmax(z))), every later layer, and layer l's down-projection.
  LayerGradients<T> layer_gradients(const Trace& t, int layer, int position,
                                    const Matrix<T>& points, TokenId target) const {
    const LayerRequest<T> r{layer, position, points, target};
    return std::move(layer_gradients(t, std::span<const LayerRequest<T>>(&r, 1))[0]);
  }

  /// Several requests at once. Requests at one position share every layer above their start:
  /// at layer k the rows of all requests that started below k go through one batched pass (one
  /// GEMM of Σ rows per weight instead of one per request), then all final hidden states share one
  /// pass over the output head (blocks/output_head.hpp). When the layer caches of all points would
  /// exceed layer_cache_budget(), the points are taken in slices (rows a..a+s of every request
  /// together), so that each slice still shares every layer. Requests that differ only in their
  /// target (twins: one prompt's candidate answers) share the forward pass and the head's pass.
  std::vector<LayerGradients<T>> layer_gradients(const Trace& t,
                                                 std::span<const LayerRequest<T>> reqs) const {
    for (const auto& q : reqs) check_request(t, q);
    check_trace(t);
    std::vector<LayerGradients<T>> out(reqs.size());
    if (reqs.empty()) return out;
    double per_point = 0;  // bytes of the caches of one point of every request (twins share)
    Index most = 0;
    std::vector<std::size_t> primaries;
    twins(reqs, primaries);
    for (const std::size_t r : primaries) {
      const auto& q = reqs[r];
      per_point += self().row_bytes(q.position + 1.0) * double(self().num_layers() - q.layer);
      most = std::max(most, q.points.rows());
    }
    const Index slice =
        std::max<Index>(1, static_cast<Index>(std::min(cache_budget_ / per_point, 1e12)));
    if (slice >= most) {
      gradients_chunk(t, reqs, out);
      return out;
    }
    for (std::size_t r = 0; r < reqs.size(); ++r) {
      out[r].probabilities.resize(reqs[r].points.rows());
      out[r].gradients.resize(reqs[r].points.rows(), self().ffn_width());
    }
    for (Index a = 0; a < most; a += slice) {
      std::vector<LayerRequest<T>> part;
      std::vector<std::size_t> from;
      for (std::size_t r = 0; r < reqs.size(); ++r) {
        const Index n = std::min(slice, reqs[r].points.rows() - a);
        if (n <= 0) continue;
        part.push_back(
            {reqs[r].layer, reqs[r].position, reqs[r].points.middleRows(a, n), reqs[r].target});
        from.push_back(r);
      }
      std::vector<LayerGradients<T>> got(part.size());
      gradients_chunk(t, part, got);
      for (std::size_t k = 0; k < part.size(); ++k) {
        const Index n = part[k].points.rows();
        out[from[k]].probabilities.segment(a, n) = got[k].probabilities;
        out[from[k]].gradients.middleRows(a, n) = got[k].gradients;
      }
    }
    return out;
  }

  /// Bytes of layer caches one batched call may hold (default 2 GiB): layer_gradients takes more
  /// points in slices, probabilities(requests) more requests in groups, mean_site_activations
  /// more prompts in batches.
  double layer_cache_budget() const { return cache_budget_; }
  void set_layer_cache_budget(double bytes) {
    KNPROBE_REQUIRE(bytes > 0 && std::isfinite(bytes), ArgumentError,
                    "layer cache budget must be a positive number of bytes, got ", bytes);
    cache_budget_ = bytes;
  }

  /// [patterns × queries] probabilities, each pattern's interventions applied in one batched
  /// pass that starts at the lowest intervened layer and position (earlier work is the clean
  /// trace's: exact for a causal model).
  Matrix<T> probabilities(std::span<const TokenId> tokens,
                          std::span<const InterventionPattern> patterns,
                          std::span<const Query> queries) const {
    const Trace t = trace(tokens);
    return probabilities(t, patterns, queries);
  }

  Matrix<T> probabilities(const Trace& t, std::span<const InterventionPattern> patterns,
                          std::span<const Query> queries) const {
    check_trace(t);
    const int L = self().num_layers();
    using LayerCache = typename D::LayerCache;
    using NormCache = typename D::NormCache;
    const int P = static_cast<int>(patterns.size()), Q = static_cast<int>(queries.size());
    Matrix<T> out(P, Q);
    const auto [l0, p0] =
        detail::intervention_extent(patterns, L, t.num_tokens(), [&](const Intervention& iv) {
          check_layer(iv.layer);
          check_position(t, iv.position);
          check_unit(iv.unit);
        });
    for (const auto& q : queries) check_position(t, q.position), check_token(q.target);
    if (P == 0 || Q == 0) return out;
    const int S = t.num_tokens() - p0;
    const bool rerun = S > 0 && l0 < L;
    Matrix<T> x;  // final normed hidden of the recomputed rows [P·S × d]
    if (rerun) {
      const Rows rows{P, S, p0};
      LayerCache c;
      c.h_mid = t.resid_mid[static_cast<std::size_t>(l0)].middleRows(p0, S).replicate(P, 1);
      Matrix<T> h;
      for (int l = l0; l < L; ++l) {
        if (l > l0) attention_forward(l, rows, h, &t, c);
        self().ffn_pre(l, c);
        apply_interventions(l, patterns, S, p0, c.act);
        self().ffn_post(l, c, h);
      }
      NormCache nc;
      self().final_norm(h, x, nc);
    }
    for (int qi = 0; qi < Q; ++qi) {
      const auto& q = queries[static_cast<std::size_t>(qi)];
      Matrix<T> hid(P, self().hidden_size());
      for (int b = 0; b < P; ++b) {
        if (rerun && q.position >= p0)
          hid.row(b) = x.row(b * S + (q.position - p0));
        else
          hid.row(b) = t.final_hidden.row(q.position);
      }
      const std::vector<TokenId> tq(static_cast<std::size_t>(P), q.target);
      out.col(qi) = blocks::output_head::target_probabilities<T>(hid, self().head_weights(), tq);
    }
    return out;
  }

  /// Several prompts at once: result[r] = probabilities(requests[r].tokens, .patterns,
  /// .queries), [patterns × queries]. The prompts are traced as one stack of rows, every request
  /// is recomputed from its lowest intervened layer and position with the rows of all requests
  /// active at a layer going through that layer's products together (attention stays within each
  /// prompt), and all queried rows share the output-head products. Exact: each row sees only its
  /// own prompt; values may differ from single calls in the last bits (other GEMM blockings).
  /// Every request is checked (ids, positions, layers, units, targets) before any work; requests
  /// whose traces and rows would exceed layer_cache_budget() together run in consecutive groups.
  std::vector<Matrix<T>> probabilities(std::span<const ProbabilityRequest> requests) const {
    std::vector<double> bytes;
    for (std::size_t r = 0; r < requests.size(); ++r)
      bytes.push_back(check_request(requests[r], r));
    std::vector<Matrix<T>> out;
    std::size_t begin = 0;
    double held = 0;
    for (std::size_t r = 0; r <= requests.size(); ++r) {
      if (r == requests.size() || (r > begin && held + bytes[r] > cache_budget_)) {
        auto got = probabilities_group(requests.subspan(begin, r - begin));
        for (auto& m : got) out.push_back(std::move(m));
        begin = r;
        held = 0;
      }
      if (r < requests.size()) held += bytes[r];
    }
    return out;
  }

  /// For prompts of one length: result[l] [positions × ffn_width] = the mean over the prompts of
  /// the layer-l neuron-site activation at each position (the AMIG baseline), from forward passes
  /// over the prompts stacked (Rows{K, n, 0}), as many at a time as layer_cache_budget() allows;
  /// sums in prompt order, divided once.
  std::vector<Matrix<T>> mean_site_activations(std::span<const std::vector<TokenId>> prompts,
                                               std::span<const int> positions) const {
    using LayerCache = typename D::LayerCache;
    KNPROBE_REQUIRE(!prompts.empty(), ArgumentError, "mean_site_activations: no prompts");
    const std::size_t n = prompts[0].size();
    for (const auto& p : prompts)
      KNPROBE_REQUIRE(p.size() == n, ArgumentError,
                      "mean_site_activations: prompts of different lengths (", p.size(), " and ", n,
                      ")");
    std::vector<std::span<const TokenId>> views(prompts.begin(), prompts.end());
    check_prompts(views);
    for (const int p : positions)
      KNPROBE_REQUIRE(p >= 0 && std::size_t(p) < n, ArgumentError,
                      "mean_site_activations: ", "position ", p, " outside [0, ", n, ")");
    const int L = self().num_layers();
    const Index len = static_cast<Index>(n), K = static_cast<Index>(prompts.size());
    const Index per =
        std::clamp<Index>(static_cast<Index>(std::min(
                              cache_budget_ / (self().row_bytes(double(n)) * double(n)), 1e12)),
                          1, K);
    std::vector<Matrix<T>> sum(static_cast<std::size_t>(L),
                               Matrix<T>::Zero(Index(positions.size()), self().ffn_width()));
    for (Index k0 = 0; k0 < K; k0 += per) {
      const Index B = std::min(per, K - k0);
      std::vector<TokenId> flat;
      std::vector<int> pos;
      for (Index b = 0; b < B; ++b) {
        const auto& p = prompts[std::size_t(k0 + b)];
        flat.insert(flat.end(), p.begin(), p.end());
        for (Index i = 0; i < len; ++i) pos.push_back(static_cast<int>(i));
      }
      Matrix<T> h;
      self().embed(flat, pos, h);
      const Rows rows{static_cast<int>(B), static_cast<int>(len), 0};
      for (int l = 0; l < L; ++l) {
        LayerCache c;
        attention_forward(l, rows, h, nullptr, c);
        self().ffn_pre(l, c);
        auto& m = sum[static_cast<std::size_t>(l)];
        for (Index b = 0; b < B; ++b)
          for (std::size_t t = 0; t < positions.size(); ++t)
            m.row(Index(t)) += c.act.row(b * len + positions[t]);
        self().ffn_post(l, c, h);
      }
    }
    for (auto& m : sum) m /= static_cast<T>(K);
    return sum;
  }

 protected:
  CausalDecoder() = default;

  /// Batch layout of recomputed rows: `batch` sequences × `len` rows at positions
  /// start..start+len−1.
  struct Rows {
    int batch, len, start;
  };

  void check_layer(int l) const { detail::check_layer_index(l, self().num_layers()); }
  void check_unit(int u) const { detail::check_unit_index(u, self().ffn_width()); }
  void check_position(const Trace& t, int p) const {
    check_trace(t);
    detail::check_position_index(p, t.num_tokens());
  }
  /// Every decoder's Trace is one type: a trace of another model (other layer count or widths)
  /// is refused by name instead of read out of range.
  void check_trace(const Trace& t) const {
    const Index n = t.num_tokens();
    const std::size_t L = t.resid_mid.size();
    bool ok = L == static_cast<std::size_t>(self().num_layers()) && t.acts.size() == L &&
              t.keys.size() == L && t.values.size() == L && t.final_hidden.rows() == n &&
              t.final_hidden.cols() == self().hidden_size();
    for (std::size_t l = 0; ok && l < L; ++l)
      ok = t.resid_mid[l].rows() == n && t.resid_mid[l].cols() == self().hidden_size() &&
           t.acts[l].rows() == n && t.acts[l].cols() == self().ffn_width() &&
           t.keys[l].rows() == n && t.keys[l].cols() == self().kv_width() &&
           t.values[l].rows() == n && t.values[l].cols() == self().kv_width();
    KNPROBE_REQUIRE(ok, ArgumentError, D::arch_name,
                    ": the trace is not one of this model (its layers, hidden / FFN / key widths "
                    "or token rows differ: ",
                    L, " layers, hidden ", t.final_hidden.cols(),
                    "; the model: ", self().num_layers(), " layers, hidden ", self().hidden_size(),
                    ", FFN ", self().ffn_width(), ", keys ", self().kv_width(), ")");
  }
  void check_token(TokenId id) const { detail::check_token_id(id, self().vocab_size()); }

 private:
  const D& self() const { return static_cast<const D&>(*this); }

  // D::LayerCache and D::NormCache are named inside member bodies only (and cache parameters
  // are deduced): D is incomplete while this base is instantiated.

  /// A sequence batch within stacked rows, with the trace its prefix keys come from (or null).
  struct Segment {
    Rows rows;
    const Trace* prefix = nullptr;
  };

  static std::vector<int> positions(const Rows& r) {
    std::vector<int> p(static_cast<std::size_t>(r.batch) * r.len);
    for (std::size_t i = 0; i < p.size(); ++i) p[i] = r.start + static_cast<int>(i) % r.len;
    return p;
  }

  blocks::attention::Shape attention_shape(int l, const Rows& r) const {
    blocks::attention::Shape sh = self().attention_shape(l);
    sh.batch = r.batch;
    sh.q_len = r.len;
    sh.kv_len = r.start + r.len;
    sh.q_offset = r.start;
    return sh;
  }

  /// h (rows entering layer l) → c.h_mid (after the attention residual add). Keys and values of
  /// positions < rows.start come from `prefix` (the clean trace).
  template <class C>
  void attention_forward(int l, const Rows& r, const Matrix<T>& h, const Trace* prefix,
                         C& c) const {
    self().attention_in(l, h, positions(r), c);
    attention_core(l, r, prefix, c.q, c.k_new, c.v_new, c.k_full, c.v_full, c.o, c.attn);
    self().attention_out(l, h, c);
  }

  /// The same for rows that stack several sequence batches (`segs`, in row order), each attending
  /// only within itself: the projections run once over all rows, the attention per segment.
  /// Forward only (no backward cache of the attention).
  template <class C>
  void attention_forward(int l, std::span<const Segment> segs, const Matrix<T>& h, C& c) const {
    std::vector<int> pos;
    for (const auto& sg : segs) {
      const auto p = positions(sg.rows);
      pos.insert(pos.end(), p.begin(), p.end());
    }
    self().attention_in(l, h, pos, c);
    c.o.resize(h.rows(), c.q.cols());
    Index r0 = 0;
    for (const auto& sg : segs) {
      const Index n = Index(sg.rows.batch) * sg.rows.len;
      Matrix<T> kf, vf, o;
      blocks::attention::Cache<T> cache;
      attention_core(l, sg.rows, sg.prefix, c.q.middleRows(r0, n), c.k_new.middleRows(r0, n),
                     c.v_new.middleRows(r0, n), kf, vf, o, cache);
      c.o.middleRows(r0, n) = o;
      r0 += n;
    }
    self().attention_out(l, h, c);
  }

  /// Attention of one sequence batch: keys / values of positions < r.start from `prefix`, then
  /// the rows' own (k_new, v_new) → k_full, v_full; o = softmax(scale · q k_fullᵀ + mask) v_full.
  void attention_core(int l, const Rows& r, const Trace* prefix, ConstMatrixRef<T> q,
                      ConstMatrixRef<T> k_new, ConstMatrixRef<T> v_new, Matrix<T>& k_full,
                      Matrix<T>& v_full, Matrix<T>& o, blocks::attention::Cache<T>& cache) const {
    const int kv_len = r.start + r.len;
    const Index kvd = k_new.cols();
    if (r.start == 0) {
      k_full = k_new;
      v_full = v_new;
    } else {
      k_full.resize(Index(r.batch) * kv_len, kvd);
      v_full.resize(Index(r.batch) * kv_len, kvd);
      const auto& K = prefix->keys[static_cast<std::size_t>(l)];
      const auto& V = prefix->values[static_cast<std::size_t>(l)];
      for (int b = 0; b < r.batch; ++b) {
        k_full.middleRows(Index(b) * kv_len, r.start) = K.topRows(r.start);
        v_full.middleRows(Index(b) * kv_len, r.start) = V.topRows(r.start);
        k_full.middleRows(Index(b) * kv_len + r.start, r.len) =
            k_new.middleRows(Index(b) * r.len, r.len);
        v_full.middleRows(Index(b) * kv_len + r.start, r.len) =
            v_new.middleRows(Index(b) * r.len, r.len);
      }
    }
    blocks::attention::forward<T>(q, k_full, v_full, attention_shape(l, r), o, cache);
  }

  /// dL/d(h_mid) → dL/d(h entering layer l), through attention (cached prefix keys are constants).
  template <class C>
  Matrix<T> attention_backward(int l, const Rows& r, const C& c, const Matrix<T>& dmid) const {
    const Matrix<T> d_o = self().attention_out_backward(l, c, dmid);
    const auto sh = attention_shape(l, r);
    Matrix<T> dq, dk_full, dv_full;
    blocks::attention::backward<T>(d_o, c.q, c.k_full, c.v_full, sh, c.attn, dq, dk_full, dv_full);
    Matrix<T> dk(Index(r.batch) * r.len, dk_full.cols()), dv(dk.rows(), dv_full.cols());
    for (int b = 0; b < r.batch; ++b) {
      dk.middleRows(Index(b) * r.len, r.len) =
          dk_full.middleRows(Index(b) * sh.kv_len + r.start, r.len);
      dv.middleRows(Index(b) * r.len, r.len) =
          dv_full.middleRows(Index(b) * sh.kv_len + r.start, r.len);
    }
    const Matrix<T> dh = self().attention_in_backward(l, positions(r), c, dq, dk, dv);
    return dmid + dh;
  }

  /// Each prompt non-empty, within the context, its ids in the vocabulary (named by prompt and
  /// position).
  void check_prompts(std::span<const std::span<const TokenId>> prompts, const char* noun = "prompt",
                     std::size_t first = 0) const {
    const char* arch = D::arch_name;
    for (std::size_t k = 0; k < prompts.size(); ++k) {
      const auto& p = prompts[k];
      const std::size_t at = first + k;
      KNPROBE_REQUIRE(!p.empty(), ArgumentError, arch, ": ", noun, " ", at,
                      ": empty token sequence");
      KNPROBE_REQUIRE(static_cast<int>(p.size()) <= self().max_positions(), ArgumentError, arch,
                      ": ", noun, " ", at, ": ", p.size(), " tokens exceed the model's ",
                      D::context_name, " of ", self().max_positions());
      for (std::size_t j = 0; j < p.size(); ++j)
        KNPROBE_REQUIRE(p[j] >= 0 && p[j] < self().vocab_size(), ArgumentError, arch, ": ", noun,
                        " ", at, ": token id ", p[j], " at position ", j,
                        " outside the vocabulary [0, ", self().vocab_size(), ")");
    }
  }

  /// Checks request `index` of a batched probabilities call against its own prompt; returns the
  /// bytes its trace and recomputed rows hold.
  double check_request(const ProbabilityRequest& q, std::size_t index) const {
    const std::span<const TokenId> tk = q.tokens;
    check_prompts(std::span<const std::span<const TokenId>>(&tk, 1), "probabilities request",
                  index);
    const int n = static_cast<int>(tk.size());
    auto in_prompt = [&](int p, const char* what) {
      KNPROBE_REQUIRE(p >= 0 && p < n, ArgumentError, "probabilities request ", index, ": ", what,
                      " position ", p, " outside [0, ", n, ")");
    };
    const double P = static_cast<double>(q.patterns.size());
    const int p0 =
        detail::intervention_extent(
            q.patterns, self().num_layers(), n,
            [&](const Intervention& iv) {
              KNPROBE_REQUIRE(iv.layer >= 0 && iv.layer < self().num_layers(), ArgumentError,
                              "probabilities request ", index, ": layer ", iv.layer,
                              " outside [0, ", self().num_layers(), ")");
              in_prompt(iv.position, "intervention");
              KNPROBE_REQUIRE(iv.unit >= 0 && iv.unit < self().ffn_width(), ArgumentError,
                              "probabilities request ", index, ": intervention unit ", iv.unit,
                              " outside [0, ", self().ffn_width(), ")");
            })
            .position;
    for (const auto& qq : q.queries) {
      in_prompt(qq.position, "query");
      KNPROBE_REQUIRE(qq.target >= 0 && qq.target < self().vocab_size(), ArgumentError,
                      "probabilities request ", index, ": target token id ", qq.target,
                      " outside the vocabulary [0, ", self().vocab_size(), ")");
    }
    return n * (self().trace_row_bytes() + self().row_bytes(n)) +
           P * (n - p0) * self().row_bytes(n);
  }

  void check_request(const Trace& t, const LayerRequest<T>& q) const {
    check_layer(q.layer);
    check_position(t, q.position);
    check_token(q.target);
    detail::require_cols(q.points, self().ffn_width(), "layer_gradients points");
    KNPROBE_REQUIRE(q.points.rows() > 0, ArgumentError, "layer_gradients: no points");
  }

  /// The traces of several prompts from one forward pass over their rows stacked (attention
  /// within each prompt).
  std::vector<Trace> trace_stack(std::span<const std::span<const TokenId>> prompts) const {
    using LayerCache = typename D::LayerCache;
    using NormCache = typename D::NormCache;
    check_prompts(prompts);
    std::vector<Trace> out(prompts.size());
    std::vector<TokenId> flat;
    std::vector<int> pos;
    std::vector<Segment> segs;
    std::vector<Index> first;
    for (std::size_t k = 0; k < prompts.size(); ++k) {
      first.push_back(static_cast<Index>(flat.size()));
      flat.insert(flat.end(), prompts[k].begin(), prompts[k].end());
      for (std::size_t i = 0; i < prompts[k].size(); ++i) pos.push_back(static_cast<int>(i));
      segs.push_back({Rows{1, static_cast<int>(prompts[k].size()), 0}, nullptr});
      out[k].tokens.assign(prompts[k].begin(), prompts[k].end());
    }
    Matrix<T> h;
    self().embed(flat, pos, h);
    auto each = [&](std::vector<Matrix<T>> Trace::*field, const Matrix<T>& m) {
      for (std::size_t k = 0; k < prompts.size(); ++k)
        (out[k].*field).push_back(m.middleRows(first[k], Index(prompts[k].size())));
    };
    for (int l = 0; l < self().num_layers(); ++l) {
      LayerCache c;
      if (segs.size() == 1)
        attention_forward(l, segs[0].rows, h, nullptr, c);
      else
        attention_forward(l, std::span<const Segment>(segs), h, c);
      each(&Trace::resid_mid, c.h_mid);
      each(&Trace::keys, c.k_new);
      each(&Trace::values, c.v_new);
      self().ffn_pre(l, c);
      each(&Trace::acts, c.act);
      self().ffn_post(l, c, h);
    }
    NormCache nc;
    Matrix<T> fh;
    self().final_norm(h, fh, nc);
    for (std::size_t k = 0; k < prompts.size(); ++k)
      out[k].final_hidden = fh.middleRows(first[k], Index(prompts[k].size()));
    return out;
  }

  /// One group of checked requests of probabilities(requests), as one stacked pass.
  std::vector<Matrix<T>> probabilities_group(std::span<const ProbabilityRequest> requests) const {
    using LayerCache = typename D::LayerCache;
    using NormCache = typename D::NormCache;
    const int L = self().num_layers();
    const std::size_t R = requests.size();
    std::vector<Matrix<T>> out(R);
    if (R == 0) return out;
    // Distinct prompts (a fact's effects and its controls share one) and each request's start.
    std::vector<std::size_t> prompt_of(R);
    std::vector<std::span<const TokenId>> prompts;
    for (std::size_t r = 0; r < R; ++r) {
      const auto& tk = requests[r].tokens;
      std::size_t k = 0;
      while (k < prompts.size() && !std::ranges::equal(prompts[k], tk)) ++k;
      if (k == prompts.size()) prompts.push_back(tk);
      prompt_of[r] = k;
    }
    const std::vector<Trace> traces = trace_stack(prompts);
    struct Job {
      std::size_t r;
      int l0, p0, S, P;
    };
    std::vector<Job> jobs;  // requests that recompute, by start layer
    for (std::size_t r = 0; r < R; ++r) {
      const auto& q = requests[r];
      const Trace& t = traces[prompt_of[r]];
      const auto [l0, p0] =  // checked by check_request
          detail::intervention_extent(q.patterns, L, t.num_tokens(), [](const Intervention&) {});
      out[r].resize(Index(q.patterns.size()), Index(q.queries.size()));
      const int P = static_cast<int>(q.patterns.size()), S = t.num_tokens() - p0;
      if (P > 0 && !q.queries.empty() && S > 0 && l0 < L) jobs.push_back({r, l0, p0, S, P});
    }
    std::stable_sort(jobs.begin(), jobs.end(),
                     [](const Job& a, const Job& b) { return a.l0 < b.l0; });
    // Recompute: at layer l the rows of every job with l0 <= l, stacked in job order.
    std::vector<Segment> segs;
    std::vector<Index> first(jobs.size());
    Matrix<T> h;
    std::size_t joined = 0;
    for (int l = jobs.empty() ? L : jobs.front().l0; l < L; ++l) {
      LayerCache c;
      if (joined > 0) attention_forward(l, std::span<const Segment>(segs), h, c);
      for (; joined < jobs.size() && jobs[joined].l0 == l; ++joined) {
        const Job& j = jobs[joined];
        const Trace& t = traces[prompt_of[j.r]];
        first[joined] = c.h_mid.rows();
        c.h_mid.conservativeResize(c.h_mid.rows() + Index(j.P) * j.S, self().hidden_size());
        c.h_mid.bottomRows(Index(j.P) * j.S) =
            t.resid_mid[static_cast<std::size_t>(l)].middleRows(j.p0, j.S).replicate(j.P, 1);
        segs.push_back({Rows{j.P, j.S, j.p0}, &t});
      }
      self().ffn_pre(l, c);
      for (std::size_t k = 0; k < joined; ++k)
        apply_interventions(l, requests[jobs[k].r].patterns, segs[k].rows.len, segs[k].rows.start,
                            c.act, first[k]);
      self().ffn_post(l, c, h);
    }
    // The head: every queried row of every request, in one pass over the vocabulary.
    std::vector<std::size_t> job_of(R, jobs.size());
    for (std::size_t k = 0; k < jobs.size(); ++k) job_of[jobs[k].r] = k;
    Matrix<T> x;
    if (!jobs.empty()) {
      NormCache nc;
      self().final_norm(h, x, nc);
    }
    Index rows = 0;
    for (const auto& m : out) rows += m.size();
    Matrix<T> hid(rows, self().hidden_size());
    std::vector<TokenId> target(static_cast<std::size_t>(rows));
    Index at = 0;
    for (std::size_t r = 0; r < R; ++r) {
      const auto& q = requests[r];
      const Trace& t = traces[prompt_of[r]];
      const std::size_t k = job_of[r];
      for (Index b = 0; b < out[r].rows(); ++b)
        for (Index qi = 0; qi < out[r].cols(); ++qi, ++at) {
          const Query& qq = q.queries[static_cast<std::size_t>(qi)];
          target[static_cast<std::size_t>(at)] = qq.target;
          if (k < jobs.size() && qq.position >= jobs[k].p0)
            hid.row(at) = x.row(first[k] + b * jobs[k].S + (qq.position - jobs[k].p0));
          else
            hid.row(at) = t.final_hidden.row(qq.position);
        }
    }
    const Vector<T> prob =
        blocks::output_head::target_probabilities<T>(hid, self().head_weights(), target);
    at = 0;
    for (auto& m : out)
      for (Index b = 0; b < m.rows(); ++b)
        for (Index qi = 0; qi < m.cols(); ++qi) m(b, qi) = prob(at++);
    return out;
  }

  /// Requests that differ only in their target (same layer, position and points, bit for bit) are
  /// twins. Returns, for each first-seen request r (appended to `primaries`), the requests that
  /// share its forward pass (r first, then its twins); empty for a twin.
  static std::vector<std::vector<std::size_t>> twins(std::span<const LayerRequest<T>> reqs,
                                                     std::vector<std::size_t>& primaries) {
    std::vector<std::vector<std::size_t>> variants(reqs.size());
    for (std::size_t r = 0; r < reqs.size(); ++r) {
      const auto& q = reqs[r];
      const auto twin = std::find_if(primaries.begin(), primaries.end(), [&](std::size_t p) {
        const auto& o = reqs[p];
        return o.layer == q.layer && o.position == q.position &&
               o.points.rows() == q.points.rows() && (o.points.array() == q.points.array()).all();
      });
      if (twin != primaries.end()) {
        variants[*twin].push_back(r);
      } else {
        primaries.push_back(r);
        variants[r].push_back(r);
      }
    }
    return variants;
  }

  /// The requests (already checked) in one batch: see layer_gradients. Requests that differ only
  /// in their target (one prompt's candidate answers at the same points) are twins: they share
  /// the forward pass and the pass over the output head (where each target costs one row of E), and
  /// each gets its own backward pass — every value the same as with the twins in separate calls.
  void gradients_chunk(const Trace& t, std::span<const LayerRequest<T>> reqs,
                       std::span<LayerGradients<T>> out) const {
    using LayerCache = typename D::LayerCache;
    using NormCache = typename D::NormCache;
    /// The requests of one chunk at one position, in order of start layer; their rows run together
    /// from the lowest start layer up.
    struct Group {
      int position = 0;
      std::vector<std::size_t> members;  ///< primaries (indices into reqs), by start layer
      std::vector<Index> first_row;      ///< each member's first row in the batch
      std::vector<LayerCache> start;     ///< each member's own cache of its start layer
      std::vector<LayerCache> caches;    ///< by layer: the batched pass of layer k (rows `full[k]`)
      std::vector<Index> full;           ///< by layer: rows that ran the whole layer k
      Matrix<T> h;                       ///< final hidden states, one row per point
    };
    std::vector<std::size_t> primaries;
    const auto variants = twins(reqs, primaries);
    std::size_t n_variants = 0;
    for (const auto& v : variants) n_variants = std::max(n_variants, v.size());
    std::vector<std::size_t> order = primaries;
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      return reqs[a].position != reqs[b].position ? reqs[a].position < reqs[b].position
                                                  : reqs[a].layer < reqs[b].layer;
    });
    std::vector<Group> groups;
    for (const std::size_t r : order) {
      if (groups.empty() || groups.back().position != reqs[r].position) {
        groups.emplace_back();
        groups.back().position = reqs[r].position;
      }
      groups.back().members.push_back(r);
    }
    const int L = self().num_layers();
    Index total = 0;
    for (auto& g : groups) {  // forward, from the group's lowest start layer up
      g.first_row.resize(g.members.size());
      g.start.resize(g.members.size());
      g.caches.resize(static_cast<std::size_t>(L));
      g.full.assign(static_cast<std::size_t>(L), 0);
      g.h.resize(0, self().hidden_size());
      std::size_t next = 0;
      for (int k = reqs[g.members[0]].layer; k < L; ++k) {
        const auto ks = static_cast<std::size_t>(k);
        g.full[ks] = g.h.rows();
        if (g.h.rows() > 0) {
          LayerCache& c = g.caches[ks];
          const Rows rows{static_cast<int>(g.h.rows()), 1, g.position};
          attention_forward(k, rows, g.h, &t, c);
          self().ffn_pre(k, c);
          self().ffn_post(k, c, g.h);
        }
        for (; next < g.members.size() && reqs[g.members[next]].layer == k; ++next) {
          const auto& q = reqs[g.members[next]];
          const Index B = q.points.rows();
          LayerCache& c0 = g.start[next];
          c0.h_mid = t.resid_mid[ks].row(g.position).replicate(B, 1);
          c0.act = q.points;
          Matrix<T> hn;
          self().ffn_post(k, c0, hn);
          g.first_row[next] = g.h.rows();
          g.h.conservativeResize(g.h.rows() + B, Eigen::NoChange);
          g.h.bottomRows(B) = hn;
        }
      }
      total += g.h.rows();
    }
    // The head, for every row and every variant v: P_b and dP_b/dh_b for the v-th target of the
    // row's request (rows whose request has fewer targets: none, a zero gradient), all variants
    // and rows in one pass over the vocabulary (blocks/output_head.hpp).
    Matrix<T> h(total, self().hidden_size());
    std::vector<std::vector<TokenId>> target(
        n_variants, std::vector<TokenId>(static_cast<std::size_t>(total), TokenId(-1)));
    Index at = 0;
    for (const auto& g : groups) {
      h.middleRows(at, g.h.rows()) = g.h;
      for (std::size_t m = 0; m < g.members.size(); ++m) {
        const auto& vs = variants[g.members[m]];
        for (std::size_t v = 0; v < vs.size(); ++v)
          for (Index b = 0; b < reqs[vs[v]].points.rows(); ++b)
            target[v][static_cast<std::size_t>(at + g.first_row[m] + b)] = reqs[vs[v]].target;
      }
      at += g.h.rows();
    }
    std::vector<Vector<T>> prob;
    std::vector<Matrix<T>> dh_all(n_variants);
    {
      NormCache nc;
      Matrix<T> x;
      self().final_norm(h, x, nc);
      std::vector<Matrix<T>> dx;
      blocks::output_head::target_gradients<T>(x, self().head_weights(), target, prob, dx);
      for (std::size_t v = 0; v < n_variants; ++v)
        self().final_norm_backward(dx[v], h, nc, dh_all[v]);
    }
    for (std::size_t v = 0; v < n_variants; ++v) {
      // the variant's request of member m of g, or none
      auto request_of = [&](const Group& g, std::size_t m) -> const std::size_t* {
        const auto& vs = variants[g.members[m]];
        return v < vs.size() ? &vs[v] : nullptr;
      };
      const bool last = v + 1 == n_variants;
      at = 0;
      for (auto& g : groups) {  // backward, from the top layer down to each member's start
        // Uneven twins: only as far down as the lowest member that has a v-th target (members
        // are by start layer), and not at all where none has; the rows of the members without
        // one carry a zero gradient, so nothing above changes.
        std::size_t lowest = 0;
        while (lowest < g.members.size() && !request_of(g, lowest)) ++lowest;
        if (lowest == g.members.size()) {
          at += g.h.rows();
          continue;
        }
        Matrix<T> dh = dh_all[v].middleRows(at, g.h.rows());
        for (std::size_t m = 0; m < g.members.size(); ++m)
          if (const auto* r = request_of(g, m))
            out[*r].probabilities = prob[v].segment(at + g.first_row[m], reqs[*r].points.rows());
        std::size_t next = g.members.size();
        for (int k = L - 1; k >= reqs[g.members[lowest]].layer; --k) {
          const auto ks = static_cast<std::size_t>(k);
          for (; next > 0 && reqs[g.members[next - 1]].layer == k; --next)
            if (const auto* r = request_of(g, next - 1)) {
              Matrix<T> d = dh.middleRows(g.first_row[next - 1], reqs[*r].points.rows());
              self().ffn_backward(k, g.start[next - 1], d, &out[*r].gradients);
            }
          if (g.full[ks] == 0) break;
          dh.conservativeResize(g.full[ks], Eigen::NoChange);
          const Rows rows{static_cast<int>(g.full[ks]), 1, g.position};
          Matrix<T> dmid = self().ffn_backward(k, g.caches[ks], dh, nullptr);
          dh = attention_backward(k, rows, g.caches[ks], dmid);
          if (last) g.caches[ks] = LayerCache{};  // free as we go
        }
        at += g.h.rows();
      }
    }
  }

  /// Logits x Eᵀ [rows × V].
  Matrix<T> head_forward(ConstMatrixRef<T> x) const {
    Matrix<T> z;
    blocks::linear::forward<T>(x, self().head_weights(), z);
    return z;
  }

  double cache_budget_ = 2.0 * (1 << 30);
};

}  // namespace knprobe::detail
