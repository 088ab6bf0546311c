#include "knprobe/model/concept.hpp"

#include <boost/test/unit_test.hpp>

#include "knprobe/model/blocks/quantized_linear.hpp"

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

// The weight storages: dense matrices in any scalar, block-quantized ones in float only.
static_assert(knprobe::WeightStorage<knprobe::Matrix<float>, float>);
static_assert(knprobe::WeightStorage<knprobe::Matrix<double>, double>);
static_assert(knprobe::WeightStorage<knprobe::QuantizedMatrix, float>);
static_assert(!knprobe::WeightStorage<knprobe::QuantizedMatrix, double>);
static_assert(!knprobe::WeightStorage<knprobe::Matrix<float>, double>);
static_assert(!knprobe::WeightStorage<ToyModel, float>);

namespace {
// Generic code over any storage: y = x Wᵀ, then column 1 replaced and restored through the
// concept's operations only.
template <class T, knprobe::WeightStorage<T> W>
knprobe::Matrix<T> edit_and_restore(W& w, const knprobe::Matrix<T>& x) {
  knprobe::Matrix<T> y;
  knprobe::blocks::linear::forward<T>(x, w, y);
  const knprobe::Vector<T> kept = knprobe::blocks::linear::column(w, 1);
  knprobe::blocks::linear::set_column(w, 1, knprobe::Vector<T>::Zero(w.rows()).eval());
  knprobe::blocks::linear::set_column(w, 1, kept);
  knprobe::Matrix<T> again;
  knprobe::blocks::linear::forward<T>(x, w, again);
  BOOST_TEST((again == y));
  return y;
}
}  // namespace

BOOST_AUTO_TEST_CASE(weight_storage_operations_are_generic) {
  knprobe::Matrix<double> w(3, 2);
  w << 1, 2, 3, 4, 5, 6;
  const knprobe::Matrix<double> x = knprobe::Matrix<double>::Ones(1, 2);
  const auto y = edit_and_restore<double>(w, x);
  BOOST_TEST(y(0, 0) == 3.0);
  BOOST_TEST(y(0, 2) == 11.0);
  // the same generic code over block storage (F32 blocks: exact)
  auto q = knprobe::QuantizedMatrix::from_dense(w.cast<float>());
  const auto yq = edit_and_restore<float>(q, x.cast<float>().eval());
  BOOST_TEST(yq(0, 0) == 3.0f);
  BOOST_TEST(yq(0, 2) == 11.0f);
}

BOOST_AUTO_TEST_SUITE_END()
