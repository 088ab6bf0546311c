#pragma once
// KnowledgeProbe<Model>: attribution, selection, refinement and verification of knowledge neurons
// over any ProbeableModel (docs/METHOD.md §1–4, §8). The model decides nothing about attribution
// and the probe never asks which concrete model it drives: encoder vs decoder comes from
// ArchTraits.

#include <algorithm>
#include <cmath>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "knprobe/core/error.hpp"
#include "knprobe/core/rng.hpp"
#include "knprobe/probe/attribution.hpp"
#include "knprobe/probe/intervention.hpp"
#include "knprobe/probe/neuron_set.hpp"
#include "knprobe/tokenize/tokenizer.hpp"

namespace knprobe {

/// Selected neurons with their scores, strongest first.
struct Selection {
  NeuronSet neurons;
  std::vector<std::pair<Neuron, double>> ranked;
  double max_score = 0;
};

/// Effect of an intervention on the answer probability (product over answer tokens):
/// relative = (after − before) / before. NumericError when `before` is 0, below 1e-300 (the
/// ratio would overflow) or not finite: the change is then undefined, never reported as 0 or inf.
struct Effect {
  double before = 0, after = 0;
  double relative() const {
    KNPROBE_REQUIRE(std::isfinite(before) && before >= 1e-300 && std::isfinite(after), NumericError,
                    "P(answer) before the intervention is ", before, " (after: ", after,
                    "): the relative change is undefined");
    return (after - before) / before;
  }
  /// NumericError unless both probabilities are finite numbers (NaN / Inf weights or activations).
  void require_finite() const {
    KNPROBE_REQUIRE(std::isfinite(before) && std::isfinite(after), NumericError,
                    "effect: the answer probability is not a finite number (before ", before,
                    ", after ", after, "): the model's weights or activations hold NaN / Inf");
  }
};

template <ProbeableModel M>
class KnowledgeProbe {
 public:
  using Scalar = typename M::Scalar;
  static constexpr Objective objective = ArchTraits<M>::objective;

  KnowledgeProbe(const M& model, const Tokenizer& tokenizer) : m_(model), tok_(tokenizer) {
    KNPROBE_REQUIRE(tokenizer.vocab_size() <= model.vocab_size(), ArgumentError,
                    "KnowledgeProbe: tokenizer has ", tokenizer.vocab_size(),
                    " tokens but the model only ", model.vocab_size());
  }

  const M& model() const { return m_; }
  const Tokenizer& tokenizer() const { return tok_; }

  /// Longest encoded fact (prompt + answer tokens) that encode() accepts: the model's context
  /// when it states one, and at most `max_tokens` (default 512; AMIG's baselines cost T forward
  /// passes of T tokens, so T is bounded by what the user asks for, not by the input).
  void set_max_tokens(int max_tokens) {
    KNPROBE_REQUIRE(max_tokens > 0, ArgumentError, "max_tokens must be > 0, got ", max_tokens);
    max_tokens_ = max_tokens;
  }
  int max_tokens() const {
    if constexpr (HasMaxPositions<M>)
      return std::min(max_tokens_, static_cast<int>(m_.max_positions()));
    else
      return max_tokens_;
  }

  /// Tokenises a (prompt, answer) pair. Decoders: tokens = prompt + answer[:−1] (teacher forcing),
  /// answer token t predicted at len(prompt) − 1 + t. Encoders: the prompt's single [MASK] is
  /// widened to one [MASK] per answer token; each is predicted at its own position.
  /// The answer is encoded as given: for byte-level BPE include its leading space (" Paris").
  EncodedFact encode(const std::string& prompt, const std::string& answer) const {
    KNPROBE_REQUIRE(!prompt.empty(), ArgumentError, "empty prompt");
    EncodeOptions bare;
    bare.add_special = false;
    bare.dummy_prefix = false;  // the answer continues the prompt: no second dummy space
    const auto ans = tok_.encode(answer, bare);
    KNPROBE_REQUIRE(!ans.empty(), ArgumentError, "answer '", answer, "' tokenizes to nothing");
    EncodedFact f;
    f.targets = ans;
    const auto& sp = tok_.special();
    auto is_special = [&](TokenId id) {
      return id == sp.bos || id == sp.eos || id == sp.cls || id == sp.sep || id == sp.pad;
    };
    if constexpr (objective == Objective::causal_lm) {
      const auto ids = tok_.encode(prompt);
      KNPROBE_REQUIRE(!ids.empty(), ArgumentError, "prompt '", prompt, "' tokenizes to nothing");
      f.tokens = ids;
      f.tokens.insert(f.tokens.end(), ans.begin(), ans.end() - 1);
      for (std::size_t t = 0; t < ans.size(); ++t)
        f.positions.push_back(static_cast<int>(ids.size() + t) - 1);
      for (std::size_t k = 0; k < ids.size(); ++k)
        if (!is_special(ids[k])) f.replaceable.push_back(static_cast<int>(k));
    } else {
      KNPROBE_REQUIRE(sp.mask.has_value(), TokenizerError, "the tokenizer has no mask token");
      const auto ids = tok_.encode(prompt);
      const auto n_mask = std::count(ids.begin(), ids.end(), *sp.mask);
      KNPROBE_REQUIRE(n_mask == 1, ArgumentError, "encoder prompt '", prompt,
                      "' must contain exactly one mask token, found ", n_mask);
      for (TokenId id : ids) {
        if (id == *sp.mask) {
          for (std::size_t t = 0; t < ans.size(); ++t) {
            f.positions.push_back(static_cast<int>(f.tokens.size()));
            f.tokens.push_back(*sp.mask);
          }
        } else {
          if (!is_special(id)) f.replaceable.push_back(static_cast<int>(f.tokens.size()));
          f.tokens.push_back(id);
        }
      }
    }
    KNPROBE_REQUIRE(
        static_cast<int>(f.tokens.size()) <= max_tokens(), ArgumentError, "prompt + answer are ",
        f.tokens.size(), " tokens, more than the ", max_tokens(), " accepted (the model's context",
        [&] {
          if constexpr (HasMaxPositions<M>)
            return " is " + std::to_string(m_.max_positions());
          else
            return std::string(" is not stated");
        }(),
        "; the limit is set by max_tokens, --max-tokens in the CLI)");
    return f;
  }

  /// The AMIG replacement token: [MASK] for encoders, EOS for decoders.
  TokenId baseline_token() const {
    const auto& sp = tok_.special();
    const auto id = objective == Objective::masked_lm ? sp.mask : sp.eos;
    KNPROBE_REQUIRE(id.has_value(), TokenizerError, "the tokenizer has no ",
                    objective == Objective::masked_lm ? "mask" : "end-of-sequence",
                    " token for the AMIG baseline");
    return *id;
  }

  Attribution attribute(const EncodedFact& f, const AttributionOptions& o = {}) const {
    return knprobe::attribute(m_, f, o, o.method == Method::amig ? baseline_token() : TokenId(0));
  }
  /// One attribution per fact of `facts`, which share a prompt and differ only in their answer
  /// tokens (knprobe::attribute_shared: one trace, one set of baselines, the forward passes and
  /// the head's logits shared; each result equals attribute(facts[i], o)).
  std::vector<Attribution> attribute_shared(std::span<const EncodedFact> facts,
                                            const AttributionOptions& o = {}) const {
    return knprobe::attribute_shared(m_, facts, o,
                                     o.method == Method::amig ? baseline_token() : TokenId(0));
  }
  /// One attribution per fact of `facts`, independent facts (knprobe::attribute_many: on the CUDA
  /// backends one layer_gradients call over all their traces per answer token; elsewhere one fact
  /// after another, each result equal to attribute(facts[i], o)).
  std::vector<Attribution> attribute_many(std::span<const EncodedFact> facts,
                                          const AttributionOptions& o = {}) const {
    return knprobe::attribute_many(m_, facts, o,
                                   o.method == Method::amig ? baseline_token() : TokenId(0));
  }
  Attribution attribute(const std::string& prompt, const std::string& answer,
                        const AttributionOptions& o = {}) const {
    return attribute(encode(prompt, answer), o);
  }

  /// Neurons with Attr ≥ t · max(Attr) over all layers and units (Dai t = 0.2; AMIG per language:
  /// en 0.3, zh 0.2). @pre 0 < t ≤ 1. Nothing is selected when max(Attr) ≤ 0.
  static Selection select(const Attribution& a, double t) {
    KNPROBE_REQUIRE(t > 0.0 && t <= 1.0, ArgumentError, "selection threshold t = ", t,
                    " must be in (0, 1]");
    Selection s;
    for (const double x : a.scores)
      KNPROBE_REQUIRE(std::isfinite(x), NumericError,
                      "select: the attribution holds a NaN or infinite score (non-finite "
                      "activations or weights)");
    s.max_score = a.scores.size() ? *std::max_element(a.scores.begin(), a.scores.end()) : 0.0;
    if (!(s.max_score > 0)) return s;
    const auto shape = a.scores.shape();
    for (std::size_t l = 0; l < shape[0]; ++l)
      for (std::size_t i = 0; i < shape[1]; ++i)
        if (a.scores(l, i) >= t * s.max_score)
          s.ranked.push_back({Neuron{static_cast<int>(l), static_cast<int>(i)}, a.scores(l, i)});
    std::sort(s.ranked.begin(), s.ranked.end(), [](const auto& x, const auto& y) {
      return x.second != y.second ? x.second > y.second : x.first < y.first;  // ties by position
    });
    std::vector<Neuron> n;
    for (const auto& [x, _] : s.ranked) n.push_back(x);
    s.neurons = NeuronSet(std::move(n));
    return s;
  }

  /// Refinement across the prompts of one fact: neurons present in at least
  /// max(p · n_prompts, min_count) of the per-prompt sets (Dai: p = 0.7, min_count = 3).
  static NeuronSet refine(const std::vector<NeuronSet>& per_prompt, double p, int min_count) {
    KNPROBE_REQUIRE(!per_prompt.empty(), ArgumentError, "refine: no prompts");
    KNPROBE_REQUIRE(p > 0.0 && p <= 1.0, ArgumentError, "refine: p = ", p, " must be in (0, 1]");
    const double need = std::max(p * static_cast<double>(per_prompt.size()), double(min_count));
    const auto k = static_cast<std::size_t>(std::ceil(need - 1e-12));
    if (k > per_prompt.size()) return {};
    return at_least(std::max<std::size_t>(k, 1), per_prompt);
  }

  /// Answer probability (product over answer tokens) without and with the neurons of `set`
  /// multiplied by `factor` (0 = suppress, 2 = enhance) at the fact's target positions.
  Effect effect(const EncodedFact& f, const NeuronSet& set, double factor) const {
    std::vector<InterventionPattern> pats{
        {}, make_pattern(set, f.positions, InterventionOp::scale, factor)};
    std::vector<Query> qs;
    for (std::size_t t = 0; t < f.targets.size(); ++t) qs.push_back({f.positions[t], f.targets[t]});
    const auto p = m_.probabilities(f.tokens, pats, qs);
    Effect e{1.0, 1.0};
    for (Index q = 0; q < p.cols(); ++q) {
      e.before *= static_cast<double>(p(0, q));
      e.after *= static_cast<double>(p(1, q));
    }
    e.require_finite();
    return e;
  }

  /// Effects of scaling the neurons of `set` by each of `factors` at the fact's target positions,
  /// from one batched call (the clean pass is shared): result[k] = {P(answer), P under factor k}.
  std::vector<Effect> effects(const EncodedFact& f, const NeuronSet& set,
                              std::span<const double> factors) const {
    const EffectRequest r{&f, &set};
    auto out = std::move(effects(std::span<const EffectRequest>(&r, 1), factors)[0]);
    for (const auto& e : out) e.require_finite();
    return out;
  }

  /// One (fact, neuron set) of a batched effects call (both must outlive the call).
  struct EffectRequest {
    const EncodedFact* fact;
    const NeuronSet* set;
  };

  /// result[r] = effects(*requests[r].fact, *requests[r].set, factors), all requests from one
  /// model call when the model answers several prompts at once (HasBatchedProbabilities; a fact's
  /// effects, its controls and its unrelated facts then share the passes), one call per request
  /// otherwise. A non-finite probability is returned as it is (Effect::relative() refuses it), so
  /// that one bad request does not lose the others.
  std::vector<std::vector<Effect>> effects(std::span<const EffectRequest> requests,
                                           std::span<const double> factors) const {
    const std::size_t R = requests.size();
    std::vector<std::vector<InterventionPattern>> pats(R);
    std::vector<std::vector<Query>> qs(R);
    for (std::size_t r = 0; r < R; ++r) {
      const EncodedFact& f = *requests[r].fact;
      pats[r].push_back({});
      for (const double x : factors)
        pats[r].push_back(make_pattern(*requests[r].set, f.positions, InterventionOp::scale, x));
      for (std::size_t t = 0; t < f.targets.size(); ++t)
        qs[r].push_back({f.positions[t], f.targets[t]});
    }
    std::vector<Matrix<Scalar>> p;
    if constexpr (HasBatchedProbabilities<M>) {
      std::vector<ProbabilityRequest> pr;
      for (std::size_t r = 0; r < R; ++r) pr.push_back({requests[r].fact->tokens, pats[r], qs[r]});
      p = m_.probabilities(std::span<const ProbabilityRequest>(pr));
    } else {
      for (std::size_t r = 0; r < R; ++r)
        p.push_back(m_.probabilities(requests[r].fact->tokens, pats[r], qs[r]));
    }
    std::vector<std::vector<Effect>> out(R);
    for (std::size_t r = 0; r < R; ++r) {
      auto product = [&](Index row) {
        double x = 1;
        for (Index q = 0; q < p[r].cols(); ++q) x *= static_cast<double>(p[r](row, q));
        return x;
      };
      for (std::size_t k = 0; k < factors.size(); ++k)
        out[r].push_back({product(0), product(static_cast<Index>(k + 1))});
    }
    return out;
  }

  /// A control matched on activation magnitude: for every neuron (l, i) of `like`, a unit j of the
  /// same layer, not in `like`, whose mean |activation| at the fact's answer positions is close
  /// to that of i — its rank among the layer's units by |a| differs from i's by at most
  /// w = max(1, ⌊band · width⌋). Neurons are matched strongest first; the pick within the window
  /// is seeded, the result deterministic. Units in `avoid` are never picked either (e.g. the
  /// fact's other knowledge neurons). ArgumentError naming the neuron when its window has no free
  /// unit (never widened silently).
  NeuronSet magnitude_control(const NeuronSet& like, const EncodedFact& f, std::uint64_t seed,
                              double band = 0.02, const NeuronSet& avoid = {}) const {
    KNPROBE_REQUIRE(band > 0 && band < 1, ArgumentError, "magnitude control: band = ", band,
                    " must be in (0, 1)");
    const auto trace = m_.trace(f.tokens);
    const int W = m_.ffn_width();
    const int w = std::max(1, static_cast<int>(std::floor(band * W)));
    Rng rng(seed ^ detail::fnv1a("magnitude"));
    NeuronSet out;
    for (const auto& [layer, count] : like.layer_histogram()) {
      const auto acts = trace.activations(layer);
      std::vector<double> mag(static_cast<std::size_t>(W), 0.0);
      for (int p : f.positions)
        for (int j = 0; j < W; ++j) mag[j] += std::abs(static_cast<double>(acts(p, j)));
      std::vector<int> order(static_cast<std::size_t>(W)), rank(static_cast<std::size_t>(W));
      for (int j = 0; j < W; ++j) order[j] = j;
      std::sort(order.begin(), order.end(),
                [&](int a, int b) { return mag[a] != mag[b] ? mag[a] < mag[b] : a < b; });
      for (int r = 0; r < W; ++r) rank[order[r]] = r;
      std::vector<int> mine;
      for (const auto& n : like)
        if (n.layer == layer) mine.push_back(n.unit);
      std::sort(mine.begin(), mine.end(),
                [&](int a, int b) { return mag[a] != mag[b] ? mag[a] > mag[b] : a < b; });
      for (const int i : mine) {
        std::vector<int> pool;
        for (int r = std::max(0, rank[i] - w); r <= std::min(W - 1, rank[i] + w); ++r) {
          const Neuron c{layer, order[r]};
          if (!like.contains(c) && !avoid.contains(c) && !out.contains(c)) pool.push_back(order[r]);
        }
        KNPROBE_REQUIRE(!pool.empty(), ArgumentError, "magnitude control: no free unit of layer ",
                        layer, " within ", w, " ranks of |activation| of unit ", i,
                        " (the set fills its window; widen the band or select fewer neurons)");
        out.insert(
            {layer,
             pool[static_cast<std::size_t>(rng.below(static_cast<std::uint64_t>(pool.size())))]});
      }
    }
    return out;
  }

  /// A random neuron set with the same number of neurons per layer as `like`, disjoint from it
  /// and from `avoid`. ArgumentError when a layer of `like` holds more than half of its units, or
  /// fewer units than it needs are left outside `like` and `avoid` (select with a higher
  /// threshold).
  NeuronSet random_control(const NeuronSet& like, std::uint64_t seed,
                           const NeuronSet& avoid = {}) const {
    Rng rng(seed);
    NeuronSet out;
    for (const auto& [layer, count] : like.layer_histogram()) {
      KNPROBE_REQUIRE(2 * static_cast<long>(count) <= m_.ffn_width(), ArgumentError,
                      "random control: layer ", layer, " selects ", count, " of its ",
                      m_.ffn_width(),
                      " neurons; a disjoint control set of the same size needs at most half "
                      "(raise the selection threshold)");
      int taken = 0;  // units of this layer in like ∪ avoid
      for (int j = 0; j < m_.ffn_width(); ++j)
        taken += like.contains({layer, j}) || avoid.contains({layer, j});
      KNPROBE_REQUIRE(m_.ffn_width() - taken >= static_cast<int>(count), ArgumentError,
                      "random control: layer ", layer, " has ", m_.ffn_width() - taken,
                      " units outside the set and the units to avoid; ", count, " are needed");
      int added = 0;
      while (added < count) {
        const Neuron n{layer,
                       static_cast<int>(rng.below(static_cast<std::uint64_t>(m_.ffn_width())))};
        if (like.contains(n) || avoid.contains(n) || out.contains(n)) continue;
        out.insert(n);
        ++added;
      }
    }
    return out;
  }

 private:
  const M& m_;
  const Tokenizer& tok_;
  int max_tokens_ = 512;
};

}  // namespace knprobe
