#include "knprobe/probe/neuron_set.hpp"

#include <boost/test/unit_test.hpp>

using namespace knprobe;

BOOST_AUTO_TEST_SUITE(probe_neuron_set)

BOOST_AUTO_TEST_CASE(set_algebra) {
  const NeuronSet a{{1, 5}, {0, 3}, {1, 5}, {2, 0}};
  const NeuronSet b{{2, 0}, {1, 4}};
  BOOST_TEST(a.size() == 3u);
  BOOST_TEST((a.neurons().front() == Neuron{0, 3}));
  BOOST_TEST((a & b) == (NeuronSet{{2, 0}}));
  BOOST_TEST((a | b).size() == 4u);
  BOOST_TEST((a - b) == (NeuronSet{{0, 3}, {1, 5}}));
  BOOST_TEST(a.layer_histogram().at(1) == 1);
}

BOOST_AUTO_TEST_CASE(likn_and_k_of_n) {
  const NeuronSet en{{1, 1}, {2, 2}, {3, 3}}, zh{{2, 2}, {3, 3}, {4, 4}}, fr{{3, 3}, {4, 4}};
  BOOST_TEST(likn({en, zh}) == (NeuronSet{{2, 2}, {3, 3}}));
  BOOST_TEST(likn({en, zh, fr}) == (NeuronSet{{3, 3}}));
  BOOST_TEST(at_least(2, {en, zh, fr}) == (NeuronSet{{2, 2}, {3, 3}, {4, 4}}));
  BOOST_CHECK_THROW(at_least(4, {en, zh, fr}), ArgumentError);
  BOOST_CHECK_THROW(likn({}), ArgumentError);
}

BOOST_AUTO_TEST_SUITE_END()
