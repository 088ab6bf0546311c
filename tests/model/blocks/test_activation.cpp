#include "knprobe/model/blocks/activation.hpp"

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "support/finite_diff.hpp"

using namespace knprobe;
using knprobe::blocks::Activation;
namespace act = knprobe::blocks::activation;

namespace {
template <class T>
MatrixD act_grad(Activation a, const MatrixD& x, const MatrixD& r) {
  Matrix<T> dx;
  act::backward<T>(a, r.cast<T>(), x.cast<T>(), dx);
  return dx.template cast<double>();
}
}  // namespace

BOOST_AUTO_TEST_SUITE(blocks_activation)

BOOST_AUTO_TEST_CASE(known_values) {
  MatrixD x(1, 3), y;
  x << -1.0, 0.0, 2.0;
  act::forward<double>(Activation::gelu_erf, x, y);
  BOOST_TEST(std::abs(y(0, 0) - (-0.15865525393145707)) < 1e-12);
  BOOST_TEST(std::abs(y(0, 2) - 1.9544997361036416) < 1e-12);
  act::forward<double>(Activation::gelu_tanh, x, y);
  BOOST_TEST(std::abs(y(0, 0) - (-0.15880800939172324)) < 1e-12);
  act::forward<double>(Activation::silu, x, y);
  BOOST_TEST(std::abs(y(0, 2) - 2.0 / (1.0 + std::exp(-2.0))) < 1e-15);
  BOOST_TEST(y(0, 1) == 0.0);
}

BOOST_AUTO_TEST_CASE(backward_matches_finite_differences) {
  Rng rng(5);
  for (auto a : {Activation::gelu_erf, Activation::gelu_tanh, Activation::silu}) {
    const MatrixD x = testing::random_matrix(rng, 12, 3072, 2.0);
    const MatrixD r = testing::random_matrix(rng, 12, 3072);
    auto loss = [&](const MatrixD& xx) {
      MatrixD y;
      act::forward<double>(a, xx, y);
      return testing::project(r, y);
    };
    BOOST_TEST(testing::gradient_error(loss, x, act_grad<double>(a, x, r), rng) < 1e-6);
    BOOST_TEST(testing::gradient_error(loss, x, act_grad<float>(a, x, r), rng) < 1e-3);
  }
}

BOOST_AUTO_TEST_CASE(bad_arguments) {
  MatrixD x(2, 3), dy(3, 2), dx;
  BOOST_CHECK_THROW(act::backward<double>(Activation::silu, dy, x, dx), ShapeError);
}

BOOST_AUTO_TEST_SUITE_END()
