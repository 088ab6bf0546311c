#pragma once
// Interventions on knowledge neurons (docs/METHOD.md §6):
//   activations — suppress (h_i ← 0), enhance (h_i ← 2 h_i), set (h_i ← v) at target positions;
//   weights     — erase / edit value vectors v ← v − λ₁ (|v|/|e_o|) e_o + λ₂ (|v|/|e_t|) e_t,
//                 through an RAII guard that restores the saved vectors bit-exactly.

#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "knprobe/model/concept.hpp"
#include "knprobe/probe/neuron_set.hpp"

namespace knprobe {

/// One pattern applying `op(value)` to every neuron of `set` at every position of `positions`.
inline InterventionPattern make_pattern(const NeuronSet& set, const std::vector<int>& positions,
                                        InterventionOp op, double value) {
  InterventionPattern p;
  for (const auto& n : set)
    for (int pos : positions) p.push_back({n.layer, n.unit, pos, op, value});
  return p;
}

inline InterventionPattern suppress(const NeuronSet& s, const std::vector<int>& pos) {
  return make_pattern(s, pos, InterventionOp::scale, 0.0);
}
inline InterventionPattern enhance(const NeuronSet& s, const std::vector<int>& pos) {
  return make_pattern(s, pos, InterventionOp::scale, 2.0);
}

/// Saves the value vectors of a neuron set, lets the caller change them, and restores the saved
/// vectors exactly (bit for bit) on destruction or `restore()`.
template <HasValueVectors M>
class ValueVectorEdit {
 public:
  ValueVectorEdit(M& model, const NeuronSet& set) : model_(&model) {
    for (const auto& n : set) saved_.emplace_back(n, model.value_vector(n.layer, n.unit));
  }
  ValueVectorEdit(const ValueVectorEdit&) = delete;
  ValueVectorEdit& operator=(const ValueVectorEdit&) = delete;
  ~ValueVectorEdit() { restore(); }

  /// v ← v − l1 (|v|/|e_old|) e_old + l2 (|v|/|e_new|) e_new for every saved neuron: Dai's edit
  /// as written (erase is l2 = 0 with e_new unused). It assumes each neuron's activation at the
  /// answer position is positive; see the overload below for the general rule.
  void edit(TokenId old_answer, std::optional<TokenId> new_answer, double l1 = 1.0,
            double l2 = 8.0) {
    edit_signed(old_answer, new_answer, l1, l2, nullptr);
  }

  /// The edit in the direction of each neuron's actual contribution (docs/METHOD.md §6): a neuron
  /// with activation a writes a·v, so v ← v − sign(a) l1 (|v|/|e_old|) e_old + sign(a) l2
  /// (|v|/|e_new|) e_new. `activation` gives a at the answer position for every saved neuron; a
  /// neuron with a = 0 contributes nothing and is left unchanged. ArgumentError when a neuron has
  /// no entry.
  void edit(TokenId old_answer, std::optional<TokenId> new_answer, double l1, double l2,
            const std::map<Neuron, double>& activation) {
    edit_signed(old_answer, new_answer, l1, l2, &activation);
  }

  void restore() {
    if (!model_) return;
    for (const auto& [n, v] : saved_) model_->set_value_vector(n.layer, n.unit, v);
    model_ = nullptr;
  }

 private:
  void edit_signed(TokenId old_answer, std::optional<TokenId> new_answer, double l1, double l2,
                   const std::map<Neuron, double>* activation) {
    using T = typename M::Scalar;
    const auto eo = model_->token_embedding(old_answer);
    KNPROBE_REQUIRE(eo.norm() > 0, ArgumentError, "edit: the embedding of token ", old_answer,
                    " is zero");
    std::optional<Vector<T>> et;
    if (new_answer) {
      et = model_->token_embedding(*new_answer);
      KNPROBE_REQUIRE(et->norm() > 0, ArgumentError, "edit: the embedding of token ", *new_answer,
                      " is zero");
    }
    for (const auto& [n, v] : saved_) {
      double sign = 1.0;
      if (activation) {
        const auto it = activation->find(n);
        KNPROBE_REQUIRE(it != activation->end(), ArgumentError, "edit: no activation for neuron L",
                        n.layer, ".", n.unit);
        if (it->second == 0) continue;
        sign = it->second > 0 ? 1.0 : -1.0;
      }
      Vector<T> nv = v - static_cast<T>(sign * l1 * v.norm() / eo.norm()) * eo;
      if (et) nv += static_cast<T>(sign * l2 * v.norm() / et->norm()) * *et;
      model_->set_value_vector(n.layer, n.unit, nv);
    }
  }

  M* model_;
  std::vector<std::pair<Neuron, Vector<typename M::Scalar>>> saved_;
};

}  // namespace knprobe
