#pragma once
// NeuronSet: a sorted, duplicate-free set of (layer, unit) neurons with set algebra, and the
// language-independent knowledge-neuron helpers (docs/METHOD.md §4):
//   LIKN(f) = ∩_lang N_lang(f);  at_least(k, sets) = neurons present in ≥ k of the sets.

#include <algorithm>
#include <initializer_list>
#include <iterator>
#include <map>
#include <vector>

#include "knprobe/model/concept.hpp"

namespace knprobe {

class NeuronSet {
 public:
  NeuronSet() = default;
  NeuronSet(std::initializer_list<Neuron> n) : n_(n) { normalise(); }
  explicit NeuronSet(std::vector<Neuron> n) : n_(std::move(n)) { normalise(); }

  std::size_t size() const { return n_.size(); }
  bool empty() const { return n_.empty(); }
  bool contains(const Neuron& x) const { return std::binary_search(n_.begin(), n_.end(), x); }
  auto begin() const { return n_.begin(); }
  auto end() const { return n_.end(); }
  const std::vector<Neuron>& neurons() const { return n_; }
  void insert(const Neuron& x) {
    auto it = std::lower_bound(n_.begin(), n_.end(), x);
    if (it == n_.end() || *it != x) n_.insert(it, x);
  }

  /// Number of neurons per layer (for random controls with the same layer histogram).
  std::map<int, int> layer_histogram() const {
    std::map<int, int> h;
    for (const auto& x : n_) ++h[x.layer];
    return h;
  }

  friend NeuronSet operator|(const NeuronSet& a, const NeuronSet& b) {
    NeuronSet r;
    std::set_union(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(r.n_));
    return r;
  }
  friend NeuronSet operator&(const NeuronSet& a, const NeuronSet& b) {
    NeuronSet r;
    std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(r.n_));
    return r;
  }
  friend NeuronSet operator-(const NeuronSet& a, const NeuronSet& b) {
    NeuronSet r;
    std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(r.n_));
    return r;
  }
  friend bool operator==(const NeuronSet&, const NeuronSet&) = default;

 private:
  void normalise() {
    std::sort(n_.begin(), n_.end());
    n_.erase(std::unique(n_.begin(), n_.end()), n_.end());
  }
  std::vector<Neuron> n_;
};

/// Neurons present in at least `k` of `sets` (k = sets.size() is the intersection, 1 the union).
inline NeuronSet at_least(std::size_t k, const std::vector<NeuronSet>& sets) {
  KNPROBE_REQUIRE(k >= 1 && k <= sets.size(), ArgumentError, "at_least: k = ", k,
                  " must be in [1, ", sets.size(), "]");
  std::map<Neuron, std::size_t> count;
  for (const auto& s : sets)
    for (const auto& n : s) ++count[n];
  std::vector<Neuron> out;
  for (const auto& [n, c] : count)
    if (c >= k) out.push_back(n);
  return NeuronSet(std::move(out));
}

/// Language-independent knowledge neurons: the intersection of the per-language sets.
inline NeuronSet likn(const std::vector<NeuronSet>& per_language) {
  KNPROBE_REQUIRE(!per_language.empty(), ArgumentError, "likn: no language sets");
  return at_least(per_language.size(), per_language);
}

}  // namespace knprobe
