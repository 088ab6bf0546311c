#pragma once
// Degenerate knowledge neurons (docs/METHOD.md §5; Chen et al. 2024): different neurons that store
// the same fact, so that suppressing any one of them is harmless while suppressing them together is
// not. With p₀ = P(answer | prompt) and p(S) = the same with the activations of S set to 0 at the
// answer positions (product over answer tokens):
//   candidates  = the fact's selected knowledge neurons (after the t·max threshold), strongest
//                 first, at most `top` (paper: neurons[:20]); `DknCandidates::top_attributed`
//                 takes the `top` neurons by attribution among all instead (another method,
//                 offered under its own name);
//   harmless(S) ⇔ p(S) ≥ (1 − T_low) p₀    (paper: T_low = 0.2)
//   harmful(S)  ⇔ p(S) < (1 − T_high) p₀   (paper: T_high = 0.25)
//   S is degenerate ⇔ harmful(S) and every proper subset of S is harmless.
// The pairwise search of the paper is max_set_size = 2 (≤ top + top·(top−1)/2 forward passes);
// larger sets are searched level by level (a k-set is tried only when all its (k−1)-subsets are
// harmless, apriori-style), within `max_forward_passes`. Suppression patterns go to the model in
// batches (`probabilities` runs each batch as one pass over the patterns).

#include <algorithm>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "knprobe/probe/attribution.hpp"
#include "knprobe/probe/intervention.hpp"

namespace knprobe {

/// Where the DKN candidates come from (docs/METHOD.md §5).
enum class DknCandidates {
  knowledge_neurons,  ///< the selected knowledge neurons, strongest first (the paper; default)
  top_attributed      ///< the top neurons by attribution among all units
};

struct DknOptions {
  DknCandidates candidates = DknCandidates::knowledge_neurons;
  int top = 20;
  double t_low = 0.2, t_high = 0.25;
  int max_set_size = 2;  ///< 2 = the paper's pairs
  std::size_t max_forward_passes = 100000;
  int batch = 64;  ///< suppression patterns per model call
};

struct DknResult {
  double p0 = 0;                                      ///< clean answer probability
  std::vector<std::pair<Neuron, double>> candidates;  ///< top neurons with their scores
  std::vector<std::pair<Neuron, double>> singles;     ///< p({n}) / p₀ of every candidate
  std::vector<std::vector<Neuron>> degenerate;        ///< degenerate sets, sorted
  std::size_t forward_passes = 0;                     ///< suppressed passes evaluated (+1 clean)
  bool truncated = false;                             ///< the search stopped at max_forward_passes
  std::string note;  ///< why nothing was searched (fewer than 2 candidates), else empty
};

/// Searches degenerate neuron sets of one encoded fact. `selected`: the fact's selected knowledge
/// neurons with their scores, strongest first (KnowledgeProbe::select(...).ranked) — required
/// for the default DknCandidates::knowledge_neurons, unused for top_attributed.
template <ProbeableModel M>
DknResult find_degenerate(const M& m, const EncodedFact& f, const Attribution& a,
                          const DknOptions& o = {},
                          const std::vector<std::pair<Neuron, double>>* selected = nullptr) {
  KNPROBE_REQUIRE(o.top >= 2, ArgumentError, "DKN: top = ", o.top, " must be ≥ 2");
  KNPROBE_REQUIRE(
      o.t_low >= 0 && o.t_low < 1 && o.t_high > 0 && o.t_high <= 1 && o.t_low <= o.t_high,
      ArgumentError, "DKN: need 0 ≤ T_low ≤ T_high ≤ 1, T_low < 1, got T_low = ", o.t_low,
      ", T_high = ", o.t_high);
  KNPROBE_REQUIRE(o.max_set_size >= 2, ArgumentError, "DKN: max_set_size = ", o.max_set_size,
                  " must be ≥ 2");
  KNPROBE_REQUIRE(o.batch >= 1, ArgumentError, "DKN: batch must be ≥ 1");
  KNPROBE_REQUIRE(!f.targets.empty(), ArgumentError, "DKN: the fact has no answer tokens");
  DknResult r;
  if (o.candidates == DknCandidates::knowledge_neurons) {
    KNPROBE_REQUIRE(selected != nullptr, ArgumentError,
                    "DKN: the knowledge-neuron candidates need the fact's selected neurons (or "
                    "use DknCandidates::top_attributed)");
    const auto k = std::min<std::size_t>(static_cast<std::size_t>(o.top), selected->size());
    r.candidates.assign(selected->begin(), selected->begin() + static_cast<std::ptrdiff_t>(k));
  } else {  // the top neurons by score among all (ties by position)
    std::vector<std::pair<Neuron, double>> all;
    const auto shape = a.scores.shape();
    for (std::size_t l = 0; l < shape[0]; ++l)
      for (std::size_t i = 0; i < shape[1]; ++i)
        all.push_back({Neuron{static_cast<int>(l), static_cast<int>(i)}, a.scores(l, i)});
    const auto k = std::min<std::size_t>(static_cast<std::size_t>(o.top), all.size());
    std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(k), all.end(),
                      [](const auto& x, const auto& y) {
                        return x.second != y.second ? x.second > y.second : x.first < y.first;
                      });
    r.candidates.assign(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(k));
  }

  std::vector<Query> qs;
  for (std::size_t t = 0; t < f.targets.size(); ++t) qs.push_back({f.positions[t], f.targets[t]});
  const auto trace = m.trace(f.tokens);
  // p(S) for many S at once, in batches; p({}) first.
  auto evaluate = [&](const std::vector<std::vector<Neuron>>& sets) {
    std::vector<double> out;
    for (std::size_t b = 0; b < sets.size(); b += static_cast<std::size_t>(o.batch)) {
      const std::size_t e = std::min(sets.size(), b + static_cast<std::size_t>(o.batch));
      std::vector<InterventionPattern> pats;
      for (std::size_t s = b; s < e; ++s) pats.push_back(suppress(NeuronSet(sets[s]), f.positions));
      Matrix<typename M::Scalar> p;
      if constexpr (HasTraceProbabilities<M>)
        p = m.probabilities(trace, pats, qs);  // reuses the clean trace
      else
        p = m.probabilities(f.tokens, pats, qs);
      for (Index row = 0; row < p.rows(); ++row) {
        double prod = 1;
        for (Index q = 0; q < p.cols(); ++q) prod *= static_cast<double>(p(row, q));
        out.push_back(prod);
      }
    }
    return out;
  };
  r.p0 = evaluate({{}})[0];
  if (r.candidates.size() < 2) {  // a result, not an error: nothing to search
    r.note = "fewer than 2 candidate neurons (" + std::to_string(r.candidates.size()) + ")";
    return r;
  }
  const double harmless = (1 - o.t_low) * r.p0, harmful = (1 - o.t_high) * r.p0;

  std::vector<std::vector<Neuron>> level;
  for (const auto& [n, _] : r.candidates) level.push_back({n});
  const auto single = evaluate(level);
  r.forward_passes = level.size();
  std::vector<std::vector<Neuron>> safe;  // harmless sets of the current size, sorted
  for (std::size_t i = 0; i < level.size(); ++i) {
    r.singles.push_back({level[i][0], r.p0 > 0 ? single[i] / r.p0 : 0.0});
    if (single[i] >= harmless) safe.push_back(level[i]);
  }
  std::sort(safe.begin(), safe.end());
  for (int size = 2; size <= o.max_set_size && safe.size() >= 2; ++size) {
    // Candidates of this size: joins of two safe sets sharing all but their last neuron, whose
    // every (size−1)-subset is safe.
    const std::set<std::vector<Neuron>> safe_set(safe.begin(), safe.end());
    std::vector<std::vector<Neuron>> next;
    for (std::size_t i = 0; i < safe.size(); ++i)
      for (std::size_t j = i + 1; j < safe.size(); ++j) {
        if (!std::equal(safe[i].begin(), safe[i].end() - 1, safe[j].begin())) break;
        std::vector<Neuron> s = safe[i];
        s.push_back(safe[j].back());
        bool ok = true;
        for (std::size_t drop = 0; ok && drop + 2 < s.size(); ++drop) {
          std::vector<Neuron> sub = s;
          sub.erase(sub.begin() + static_cast<std::ptrdiff_t>(drop));
          ok = safe_set.count(sub) != 0;
        }
        if (ok) next.push_back(std::move(s));
      }
    if (r.forward_passes + next.size() > o.max_forward_passes) {
      next.resize(o.max_forward_passes - std::min(o.max_forward_passes, r.forward_passes));
      r.truncated = true;
    }
    const auto p = evaluate(next);
    r.forward_passes += next.size();
    safe.clear();
    for (std::size_t i = 0; i < next.size(); ++i) {
      if (p[i] < harmful)
        r.degenerate.push_back(next[i]);
      else if (p[i] >= harmless)
        safe.push_back(next[i]);
    }
    if (r.truncated) break;
  }
  std::sort(r.degenerate.begin(), r.degenerate.end());
  return r;
}

}  // namespace knprobe
