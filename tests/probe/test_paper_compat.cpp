// paper_compat attribution equals the reference implementation, EleutherAI knowledge-neurons
// 0.0.2 (tools/make_kn_reference.py, golden tests/data/hf/kn_reference.json): IG with a zero
// baseline, its linspace quadrature (α_k = k/(m−1), weight 1/m), score = a ⊙ mean gradient, on the
// tiny random GPT-2 (the reference hooks the pre-GELU `mlp.c_fc` output) and BERT fixtures.
#include <boost/test/unit_test.hpp>

#include "knprobe/model/bert.hpp"
#include "knprobe/model/gpt2.hpp"
#include "knprobe/probe/attribution.hpp"
#include "support/paths.hpp"

using namespace knprobe;

namespace {

template <class M>
double worst_score_error(const M& m, const nlohmann::json& c) {
  EncodedFact f;
  f.tokens = c["ids"].get<std::vector<TokenId>>();
  f.positions = {c["position"].get<int>()};
  f.targets = {c["target"].get<TokenId>()};
  AttributionOptions o;
  o.method = Method::ig;
  o.steps = c["steps"];
  o.quadrature = Quadrature::linspace;
  o.paper_compat = true;
  const auto a = attribute(m, f, o, 0);
  const auto ref = c["scores"].get<std::vector<std::vector<double>>>();
  double scale = 0, worst = 0;
  for (const auto& row : ref)
    for (double v : row) scale = std::max(scale, std::abs(v));
  for (std::size_t l = 0; l < ref.size(); ++l)
    for (std::size_t i = 0; i < ref[l].size(); ++i)
      worst = std::max(worst, std::abs(a.scores(l, i) - ref[l][i]) / scale);
  return worst;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(probe_paper_compat)

BOOST_AUTO_TEST_CASE(scores_equal_eleutherai_knowledge_neurons) {
  const auto hf = testing::data_dir() / "hf";
  const auto ref = testing::read_json(hf / "kn_reference.json");
  const auto gpt2 = Gpt2Model<float, NeuronSite::pre_activation>::load(hf / "gpt2_tiny");
  const auto bert = BertModel<float>::load(hf / "bert_tiny");
  int n = 0;
  for (const auto& c : ref["cases"]) {
    const std::string name = c["model"];
    const double err =
        name == "gpt2_tiny" ? worst_score_error(gpt2, c) : worst_score_error(bert, c);
    BOOST_TEST(err < 1e-4, name << " case " << n << ": worst relative score difference " << err);
    ++n;
  }
  BOOST_TEST(n == 4);
}

BOOST_AUTO_TEST_CASE(linspace_rule_is_the_reference_one) {
  const auto r = quadrature_rule(Quadrature::linspace, 5);
  BOOST_TEST(r.nodes.front() == 0.0);
  BOOST_TEST(r.nodes.back() == 1.0);
  BOOST_TEST(r.nodes[1] == 0.25);
  for (double w : r.weights) BOOST_TEST(w == 0.2);
}

BOOST_AUTO_TEST_SUITE_END()
