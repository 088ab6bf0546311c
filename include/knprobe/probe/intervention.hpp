#pragma once
// Interventions on knowledge neurons (METHOD.md §6):
//   activations — suppress (h_i ← 0), enhance (h_i ← 2 h_i), set (h_i ← v) at target positions;
//   weights     — erase / edit value vectors v ← v − λ₁ (|v|/|e_o|) e_o + λ₂ (|v|/|e_t|) e_t,
//                 through an RAII guard that restores the saved vectors bit-exactly.

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

  /// v ← v − l1 (|v|/|e_old|) e_old + l2 (|v|/|e_new|) e_new for every saved neuron (Dai's edit;
  /// erase is l2 = 0 with e_new unused).
  void edit(TokenId old_answer, std::optional<TokenId> new_answer, double l1 = 1.0,
            double l2 = 8.0) {
    using T = typename M::Scalar;
    const auto eo = model_->token_embedding(old_answer);
    for (const auto& [n, v] : saved_) {
      Vector<T> nv = v - static_cast<T>(l1 * v.norm() / eo.norm()) * eo;
      if (new_answer) {
        const auto et = model_->token_embedding(*new_answer);
        nv += static_cast<T>(l2 * v.norm() / et.norm()) * et;
      }
      model_->set_value_vector(n.layer, n.unit, nv);
    }
  }

  void restore() {
    if (!model_) return;
    for (const auto& [n, v] : saved_) model_->set_value_vector(n.layer, n.unit, v);
    model_ = nullptr;
  }

 private:
  M* model_;
  std::vector<std::pair<Neuron, Vector<typename M::Scalar>>> saved_;
};

}  // namespace knprobe
