#pragma once
// Compares a backend against an expected.json written by tools/make_hf_*_fixtures.py: logits at
// every position (all columns, or those listed in "columns"), the neuron-site activation, and
// P(target) and dP/d(activation) of layer_gradients against torch autograd.

#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "knprobe/core/tensor.hpp"

namespace knprobe::testing {

/// Worst |ours − theirs| / max|ours row| over the expected logits.
template <class M>
double worst_logit_error(const M& m, const typename M::Trace& t, const nlohmann::json& exp) {
  const auto z = m.logits(t);
  const auto want = exp["logits"].get<std::vector<std::vector<double>>>();
  std::vector<Index> cols;
  if (exp.contains("columns"))
    cols = exp["columns"].get<std::vector<Index>>();
  else
    for (std::size_t v = 0; v < want.at(0).size(); ++v) cols.push_back(static_cast<Index>(v));
  double worst = 0;
  for (std::size_t p = 0; p < want.size(); ++p) {
    const auto r = static_cast<Index>(p);
    const double scale = static_cast<double>(z.row(r).cwiseAbs().maxCoeff());
    for (std::size_t j = 0; j < cols.size(); ++j)
      worst = std::max(worst, std::abs(static_cast<double>(z(r, cols[j])) - want[p][j]) / scale);
  }
  return worst;
}

/// Checks logits (1e-4), activations (1e-4), P (1e-4) and gradients (1e-3), all relative.
template <class M>
void check_hf_parity(const M& m, const nlohmann::json& exp, const std::string& name,
                     const char* grad_key = "grad", const char* act_key = "activation") {
  using T = typename M::Scalar;
  const auto ids = exp["ids"].get<std::vector<TokenId>>();
  const auto t = m.trace(ids);
  const double worst = worst_logit_error(m, t, exp);
  BOOST_TEST(worst < 1e-4, name << " logits: worst relative difference " << worst);
  for (const auto& pr : exp["pairs"]) {
    const int l = pr["layer"], p = pr["position"];
    const auto act = pr[act_key].get<std::vector<T>>();
    const Vector<T> a = Eigen::Map<const Vector<T>>(act.data(), static_cast<Index>(act.size()));
    const Vector<T> ours = t.activations(l).row(p).transpose();
    BOOST_TEST((ours - a).norm() <= 1e-4 * a.norm(), name << " activation layer " << l);
    const auto g =
        m.layer_gradients(t, l, p, Matrix<T>(a.transpose()), pr["target"].get<TokenId>());
    const auto gw = pr[grad_key].get<std::vector<T>>();
    const Vector<T> gref = Eigen::Map<const Vector<T>>(gw.data(), static_cast<Index>(gw.size()));
    const double rel = (g.gradients.row(0).transpose() - gref).norm() / gref.norm();
    BOOST_TEST(rel < 1e-3, name << " layer " << l << " pos " << p << " gradient rel error " << rel);
    const double pref = pr["p"].get<double>();
    BOOST_TEST(std::abs(g.probabilities[0] - pref) < 1e-4 * pref,
               name << " layer " << l << " P " << g.probabilities[0] << " vs " << pref);
  }
}

}  // namespace knprobe::testing
