#include "knprobe/model/concept.hpp"

#include <boost/test/unit_test.hpp>

// A minimal probeable model: the concept's contract and nothing else.
namespace {
struct ToyModel {
  using Scalar = float;
  struct Trace {
    knprobe::Matrix<float> acts;
    knprobe::ConstMatrixRef<float> activations(int) const { return acts; }
    int num_tokens() const { return static_cast<int>(acts.rows()); }
  };
  int num_layers() const { return 1; }
  int ffn_width() const { return 2; }
  int hidden_size() const { return 2; }
  int vocab_size() const { return 3; }
  Trace trace(std::span<const knprobe::TokenId> t) const {
    return {knprobe::Matrix<float>::Zero(static_cast<knprobe::Index>(t.size()), 2)};
  }
  knprobe::LayerGradients<float> layer_gradients(const Trace&, int, int,
                                                 const knprobe::Matrix<float>& p,
                                                 knprobe::TokenId) const {
    return {knprobe::Vector<float>::Zero(p.rows()), p};
  }
  knprobe::Matrix<float> probabilities(std::span<const knprobe::TokenId>,
                                       std::span<const knprobe::InterventionPattern> ps,
                                       std::span<const knprobe::Query> qs) const {
    return knprobe::Matrix<float>::Zero(static_cast<knprobe::Index>(ps.size()),
                                        static_cast<knprobe::Index>(qs.size()));
  }
  knprobe::Vector<float> value_vector(int, int) const { return knprobe::Vector<float>::Zero(2); }
  void set_value_vector(int, int, const knprobe::Vector<float>&) {}
  knprobe::Vector<float> token_embedding(knprobe::TokenId) const {
    return knprobe::Vector<float>::Zero(2);
  }
};
struct NotAModel {};
struct NoTraits : ToyModel {};
}  // namespace

template <>
struct knprobe::ArchTraits<ToyModel> {
  static constexpr Objective objective = Objective::causal_lm;
  static constexpr FfnLayout ffn_layout = FfnLayout::gated;
  static constexpr NeuronSite neuron_site = NeuronSite::gated_product;
};

KNPROBE_ASSERT_PROBEABLE(ToyModel);
static_assert(!knprobe::ProbeableModel<NotAModel>);
static_assert(!knprobe::HasArchTraits<NoTraits>);
static_assert(knprobe::HasModelShape<NoTraits> && !knprobe::ProbeableModel<NoTraits>);

BOOST_AUTO_TEST_SUITE(model_concept)

BOOST_AUTO_TEST_CASE(traits_are_compile_time_facts) {
  static_assert(knprobe::ArchTraits<ToyModel>::objective == knprobe::Objective::causal_lm);
  const knprobe::Neuron a{1, 2}, b{1, 3};
  BOOST_TEST((a < b));
  BOOST_TEST((a == knprobe::Neuron{1, 2}));
}

BOOST_AUTO_TEST_SUITE_END()
