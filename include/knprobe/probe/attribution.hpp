#pragma once
// Knowledge attribution by integrated gradients over one layer's FFN neurons at one position
// (docs/METHOD.md §2). With P(h) the probability of the gold token when the layer-l neuron vector
// at the target position is replaced by h, activation a and baseline b:
//   Attr_i = (a_i − b_i) · Σ_k w_k ∂P/∂h_i (b + α_k (a − b))        (quadrature nodes α_k, w_k)
//   IG (Dai): b = 0.   AMIG: b = mean_k b_k, b_k = the activation with input token k replaced by
//   [MASK] (encoder) or EOS (decoder).
// Completeness: with the exact integral Σ_i Attr_i = P(a) − P(b); the per-layer error
//   δ_l = |Σ_i Attr_i − (P(a) − P(b))| is reported so users can choose m and the quadrature.
// Cost structure: one trace per prompt; the AMIG baseline traces are shared by every layer; all
// quadrature points of a layer go to the model in one batch (`layer_gradients`).

#include <algorithm>
#include <span>
#include <string>
#include <vector>

#include "knprobe/core/finite.hpp"
#include "knprobe/model/concept.hpp"
#include "knprobe/probe/quadrature.hpp"

namespace knprobe {

enum class Method { ig, amig };
enum class TokenAggregation { sum, mean };

struct AttributionOptions {
  Method method = Method::amig;
  int steps = 20;
  Quadrature quadrature = Quadrature::left_riemann;
  TokenAggregation aggregation = TokenAggregation::sum;
  std::vector<int> layers;  ///< empty = all layers
  /// Reproduce the reference code: multiply by a_i instead of (a_i − b_i).
  bool paper_compat = false;
};

/// A fact ready for the model: `tokens` are traced; answer token t (id targets[t]) is predicted at
/// positions[t]; `replaceable` are the input positions the AMIG baseline replaces, one at a time.
struct EncodedFact {
  std::vector<TokenId> tokens;
  std::vector<int> positions;
  std::vector<TokenId> targets;
  std::vector<int> replaceable;
};

/// Per (layer, answer token): P(a), P(b), Σ_i Attr_i (clean formula) and δ = |Σ − (P(a) − P(b))|.
struct Completeness {
  int layer = 0, token = 0;
  double p_actual = 0, p_baseline = 0, attribution_sum = 0, delta = 0;
};

struct Attribution {
  Tensor<double, 2> scores;  ///< [layers × units]; rows of unattributed layers are 0
  std::vector<Completeness> completeness;
  std::vector<int> layers;  ///< the layers attributed
  double max_delta() const {
    double m = 0;
    for (const auto& c : completeness) m = std::max(m, c.delta);
    return m;
  }
};

namespace detail {

/// Mean neuron vector at `positions` over traces with each replaceable token swapped for `repl`:
/// result[l][t] is the AMIG baseline of layer l at answer token t.
template <ProbeableModel M>
std::vector<std::vector<Vector<typename M::Scalar>>> amig_baselines(const M& m,
                                                                    const EncodedFact& f,
                                                                    TokenId repl) {
  using T = typename M::Scalar;
  const std::size_t L = static_cast<std::size_t>(m.num_layers()), nt = f.positions.size();
  std::vector<std::vector<Vector<T>>> base(
      L, std::vector<Vector<T>>(nt, Vector<T>::Zero(m.ffn_width())));
  KNPROBE_REQUIRE(!f.replaceable.empty(), ArgumentError,
                  "AMIG: the prompt has no token to replace");
  if constexpr (HasBatchedMeanActivations<M>) {
    std::vector<std::vector<TokenId>> prompts;
    for (int k : f.replaceable) {
      prompts.push_back(f.tokens);
      prompts.back()[static_cast<std::size_t>(k)] = repl;
    }
    const auto mean = m.mean_site_activations(std::span<const std::vector<TokenId>>(prompts),
                                              std::span<const int>(f.positions));
    for (std::size_t l = 0; l < L; ++l)
      for (std::size_t t = 0; t < nt; ++t)
        base[l][t] = mean[l].row(static_cast<Index>(t)).transpose();
    return base;
  }
  for (int k : f.replaceable) {
    std::vector<TokenId> masked = f.tokens;
    masked[static_cast<std::size_t>(k)] = repl;
    const auto tr = m.trace(masked);
    for (std::size_t l = 0; l < L; ++l)
      for (std::size_t t = 0; t < nt; ++t)
        base[l][t] += tr.activations(static_cast<int>(l)).row(f.positions[t]).transpose();
  }
  for (auto& row : base)
    for (auto& v : row) v /= static_cast<T>(f.replaceable.size());
  return base;
}

}  // namespace detail

namespace detail {

/// One group of attribute_groups: facts that share one prompt (twins), their trace and AMIG
/// baselines, their results, and the requests of the answer token being attributed.
template <ProbeableModel M>
struct AttributionGroup {
  using T = typename M::Scalar;
  std::span<const EncodedFact> facts;
  typename M::Trace trace;
  std::vector<std::vector<Vector<T>>> base;
  std::vector<Attribution> out;
  std::vector<LayerRequest<T>> reqs;  ///< answer token t: per layer, one request per fact
  std::vector<Vector<T>> acts, bases;
  std::vector<Index> base_row, act_row;
};

}  // namespace detail

/// Attribution scores of every neuron of the chosen layers for groups of encoded facts: within a
/// group the facts share one prompt and answer positions and differ only in their answer tokens
/// (the candidate objects of one claim); groups are independent facts. result[g][i] is
/// attribute(m, groups[g][i], o, baseline_token). Each group has one trace and one set of AMIG
/// baselines; per answer token, the requests of a group go to the model as one batched
/// layer_gradients call in which its facts' requests are twins (same points, other target), and
/// on a model with HasMultiTraceLayerGradients the requests of all groups go as one call over
/// their traces (rows of every fact share each layer's GEMMs and the head). On the CPU drivers
/// each result is bit-identical to attribute alone; the CUDA engine treats twins and other
/// traces' rows as rows of a larger GEMM (equal within rounding).
template <ProbeableModel M>
std::vector<std::vector<Attribution>> attribute_groups(
    const M& m, std::span<const std::span<const EncodedFact>> groups, const AttributionOptions& o,
    TokenId baseline_token) {
  using T = typename M::Scalar;
  KNPROBE_REQUIRE(!groups.empty(), ArgumentError, "attribute: no fact");
  // Errors name the group when there are several (one bad fact stops the whole batch).
  auto where = [&](std::size_t gi) {
    return groups.size() > 1 ? " (group " + std::to_string(gi) + " of the batch)" : std::string();
  };
  for (std::size_t gi = 0; gi < groups.size(); ++gi) {
    const auto& facts = groups[gi];
    KNPROBE_REQUIRE(!facts.empty(), ArgumentError, "attribute: no fact", where(gi));
    const EncodedFact& f = facts[0];
    KNPROBE_REQUIRE(!f.tokens.empty(), ArgumentError, "attribute: empty prompt", where(gi));
    for (const auto& g : facts) {
      KNPROBE_REQUIRE(!g.targets.empty() && g.targets.size() == g.positions.size(), ArgumentError,
                      "attribute: the answer has no tokens", where(gi));
      KNPROBE_REQUIRE(
          g.tokens == f.tokens && g.positions == f.positions && g.replaceable == f.replaceable,
          ArgumentError,
          "attribute: the facts of a group differ in more than their answer tokens (tokens, "
          "answer positions and replaceable positions must be equal)",
          where(gi));
    }
  }
  const QuadratureRule rule = quadrature_rule(o.quadrature, o.steps);
  Attribution proto;
  proto.layers = o.layers;
  if (proto.layers.empty())
    for (int l = 0; l < m.num_layers(); ++l) proto.layers.push_back(l);
  for (int l : proto.layers)
    KNPROBE_REQUIRE(l >= 0 && l < m.num_layers(), ArgumentError, "attribute: layer ", l,
                    " outside [0, ", m.num_layers(), ")");
  {
    std::vector<int> sorted = proto.layers;
    std::sort(sorted.begin(), sorted.end());
    KNPROBE_REQUIRE(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end(), ArgumentError,
                    "attribute: a layer is listed twice");
  }
  proto.scores = Tensor<double, 2>::from_shape(
      {static_cast<std::size_t>(m.num_layers()), static_cast<std::size_t>(m.ffn_width())});
  proto.scores.fill(0.0);
  std::vector<detail::AttributionGroup<M>> state;
  state.reserve(groups.size());
  std::size_t answer_tokens = 0;
  for (std::size_t gi = 0; gi < groups.size(); ++gi) {
    const auto& facts = groups[gi];
    const EncodedFact& f = facts[0];
    auto trace = m.trace(f.tokens);
    for (int l = 0; l < m.num_layers(); ++l)  // name the first layer whose neurons are not finite
      detail::require_finite(trace.activations(l),
                             "attribute: neuron activations of layer " + std::to_string(l) +
                                 " (NaN / Inf weights or activations upstream)" + where(gi));
    std::vector<std::vector<Vector<T>>> base;
    if (o.method == Method::amig) base = detail::amig_baselines(m, f, baseline_token);
    state.push_back({facts,
                     std::move(trace),
                     std::move(base),
                     std::vector<Attribution>(facts.size(), proto),
                     {},
                     {},
                     {},
                     {},
                     {}});
    answer_tokens = std::max(answer_tokens, f.targets.size());
  }
  const int nq = static_cast<int>(rule.nodes.size());
  for (std::size_t t = 0; t < answer_tokens; ++t) {
    // Every layer's points for answer token t: quadrature nodes, then α = 0 and α = 1 (for the
    // completeness check) unless a node's point already equals that point (the left Riemann
    // sum's α = 0: one row fewer; each row's value is unchanged up to the rounding of the GEMM
    // blocking of a smaller batch), as one batched request when the model supports it; each
    // fact's requests have the same points (the facts share the prompt), only the target
    // differs.
    std::vector<detail::AttributionGroup<M>*> active;
    for (auto& g : state) {
      const EncodedFact& f = g.facts[0];
      if (t >= f.targets.size()) continue;
      active.push_back(&g);
      g.reqs.clear();
      g.acts.clear();
      g.bases.clear();
      g.base_row.clear();
      g.act_row.clear();
      for (int l : proto.layers) {
        const Vector<T> a = g.trace.activations(l).row(f.positions[t]).transpose();
        const Vector<T> b = o.method == Method::amig ? g.base[static_cast<std::size_t>(l)][t]
                                                     : Vector<T>(Vector<T>::Zero(m.ffn_width()));
        Matrix<T> pts(nq + 2, m.ffn_width());
        for (int k = 0; k < nq; ++k)
          pts.row(k) = (b + static_cast<T>(rule.nodes[k]) * (a - b)).transpose();
        Index rows = nq;
        auto row_of = [&](const Vector<T>& v) {
          for (Index k = 0; k < nq; ++k)
            if ((pts.row(k).transpose().array() == v.array()).all()) return k;
          pts.row(rows) = v.transpose();
          return rows++;
        };
        g.base_row.push_back(row_of(b));
        g.act_row.push_back(row_of(a));
        pts.conservativeResize(rows, Eigen::NoChange);
        for (const auto& h : g.facts) g.reqs.push_back({l, f.positions[t], pts, h.targets[t]});
        g.acts.push_back(a);
        g.bases.push_back(b);
      }
    }
    std::vector<std::vector<LayerGradients<T>>> grads(active.size());
    if constexpr (HasMultiTraceLayerGradients<M>) {
      if (active.size() > 1) {
        std::vector<TracedRequests<typename M::Trace, T>> batch;
        for (const auto* g : active)
          batch.push_back({&g->trace, std::span<const LayerRequest<T>>(g->reqs)});
        grads = m.layer_gradients(std::span<const TracedRequests<typename M::Trace, T>>(batch));
        KNPROBE_REQUIRE(grads.size() == active.size(), ShapeError,
                        "attribute: layer_gradients returned results for ", grads.size(),
                        " traces where ", active.size(), " were asked");
      }
    }
    for (std::size_t gi = 0; gi < active.size(); ++gi) {
      const auto& g = *active[gi];
      if (!grads[gi].empty()) continue;
      if constexpr (HasBatchedLayerGradients<M>) {
        grads[gi] = m.layer_gradients(g.trace, std::span<const LayerRequest<T>>(g.reqs));
      } else {
        for (const auto& r : g.reqs)
          grads[gi].push_back(m.layer_gradients(g.trace, r.layer, r.position, r.points, r.target));
      }
    }
    for (std::size_t gi = 0; gi < active.size(); ++gi)  // a backend's result of the wrong size
      KNPROBE_REQUIRE(grads[gi].size() == active[gi]->reqs.size(), ShapeError,
                      "attribute: layer_gradients returned ", grads[gi].size(), " results where ",
                      active[gi]->reqs.size(), " were asked");
    for (std::size_t gi = 0; gi < active.size(); ++gi) {
      auto& g = *active[gi];
      const std::string at = where(static_cast<std::size_t>(&g - state.data()));
      const double w = o.aggregation == TokenAggregation::mean
                           ? 1.0 / static_cast<double>(g.facts[0].targets.size())
                           : 1.0;
      for (std::size_t li = 0; li < proto.layers.size(); ++li) {
        const int l = proto.layers[li];
        const Vector<T>& a = g.acts[li];
        const Vector<T>& b = g.bases[li];
        const Eigen::VectorXd diff = (a - b).template cast<double>();
        for (std::size_t fi = 0; fi < g.facts.size(); ++fi) {
          const auto& gr = grads[gi][li * g.facts.size() + fi];
          detail::require_finite(gr.probabilities, "attribute: P(answer) along the path of layer " +
                                                       std::to_string(l) + at);
          detail::require_finite(
              gr.gradients, "attribute: dP/dh along the path of layer " + std::to_string(l) + at);
          Eigen::VectorXd integral = Eigen::VectorXd::Zero(m.ffn_width());
          for (int k = 0; k < nq; ++k)
            integral += rule.weights[k] * gr.gradients.row(k).transpose().template cast<double>();
          const Eigen::VectorXd clean = diff.cwiseProduct(integral);
          const Eigen::VectorXd used =
              o.paper_compat ? Eigen::VectorXd(a.template cast<double>().cwiseProduct(integral))
                             : clean;
          Attribution& res = g.out[fi];
          for (int i = 0; i < m.ffn_width(); ++i)
            res.scores(static_cast<std::size_t>(l), static_cast<std::size_t>(i)) += w * used[i];
          Completeness c;
          c.layer = l;
          c.token = static_cast<int>(t);
          c.p_baseline = static_cast<double>(gr.probabilities[g.base_row[li]]);
          c.p_actual = static_cast<double>(gr.probabilities[g.act_row[li]]);
          c.attribution_sum = clean.sum();
          c.delta = std::abs(c.attribution_sum - (c.p_actual - c.p_baseline));
          res.completeness.push_back(c);
        }
      }
    }
  }
  std::vector<std::vector<Attribution>> out;
  for (auto& g : state) out.push_back(std::move(g.out));
  return out;
}

/// Attribution scores for each of several encoded facts that share one prompt and answer
/// positions and differ only in their answer tokens (the candidate objects of one claim,
/// single-token or of one length): result[i] is attribute(m, facts[i], o, baseline_token),
/// computed with one trace, one set of AMIG baselines and, per answer token, one batched
/// layer_gradients call in which the facts' requests are twins (attribute_groups, one group).
template <ProbeableModel M>
std::vector<Attribution> attribute_shared(const M& m, std::span<const EncodedFact> facts,
                                          const AttributionOptions& o, TokenId baseline_token) {
  const std::span<const EncodedFact> one[] = {facts};
  return std::move(attribute_groups(m, std::span<const std::span<const EncodedFact>>(one), o,
                                    baseline_token)[0]);
}

/// Attribution scores of several independent facts (any prompts): result[i] is
/// attribute(m, facts[i], o, baseline_token). On a model with HasMultiTraceLayerGradients (the
/// CUDA backends) the facts' requests run as one layer_gradients call over all their traces, so
/// a batch of facts fills the GEMMs that one fact's few hundred rows leave idle; elsewhere the
/// facts run one after another (each bit-identical to attribute). Memory: every fact's trace is
/// held until the batch ends — batch a few to a few dozen facts. A bad fact (an error naming its
/// index in the batch) stops the whole batch.
template <ProbeableModel M>
std::vector<Attribution> attribute_many(const M& m, std::span<const EncodedFact> facts,
                                        const AttributionOptions& o, TokenId baseline_token) {
  KNPROBE_REQUIRE(!facts.empty(), ArgumentError, "attribute: no fact");
  std::vector<std::span<const EncodedFact>> groups;
  for (const auto& f : facts) groups.emplace_back(&f, 1);
  auto per =
      attribute_groups(m, std::span<const std::span<const EncodedFact>>(groups), o, baseline_token);
  std::vector<Attribution> out;
  for (auto& g : per) out.push_back(std::move(g[0]));
  return out;
}

/// Attribution scores of every neuron of the chosen layers for one encoded fact.
/// `baseline_token` is the replacement id of AMIG ([MASK] or EOS); unused for IG.
template <ProbeableModel M>
Attribution attribute(const M& m, const EncodedFact& f, const AttributionOptions& o,
                      TokenId baseline_token) {
  return std::move(attribute_shared(m, std::span<const EncodedFact>(&f, 1), o, baseline_token)[0]);
}

}  // namespace knprobe
