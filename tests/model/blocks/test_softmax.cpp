#include "knprobe/model/blocks/softmax.hpp"

#include <boost/test/unit_test.hpp>

#include "support/finite_diff.hpp"

using namespace knprobe;
namespace sm = knprobe::blocks::softmax;
namespace lsm = knprobe::blocks::log_softmax;

namespace {
template <class T, bool Log>
MatrixD grad(const MatrixD& x, const MatrixD& r) {
  Matrix<T> y, dx;
  if constexpr (Log) {
    lsm::forward<T>(x.cast<T>(), y);
    lsm::backward<T>(r.cast<T>(), y, dx);
  } else {
    sm::forward<T>(x.cast<T>(), y);
    sm::backward<T>(r.cast<T>(), y, dx);
  }
  return dx.template cast<double>();
}
template <bool Log>
double loss_of(const MatrixD& x, const MatrixD& r) {
  MatrixD y;
  if constexpr (Log)
    lsm::forward<double>(x, y);
  else
    sm::forward<double>(x, y);
  return testing::project(r, y);
}
}  // namespace

BOOST_AUTO_TEST_SUITE(blocks_softmax)

BOOST_AUTO_TEST_CASE(rows_sum_to_one_and_are_stable) {
  MatrixD x(2, 3), y;
  x << 1000, 1001, 1002, -5, 0, 5;
  sm::forward<double>(x, y);
  BOOST_TEST(std::abs(y.row(0).sum() - 1.0) < 1e-15);
  BOOST_TEST(std::isfinite(y(0, 0)));
  MatrixD ly;
  lsm::forward<double>(x, ly);
  BOOST_TEST(std::abs(std::exp(ly(1, 2)) - y(1, 2)) < 1e-15);
}

BOOST_AUTO_TEST_CASE(backward_matches_finite_differences) {
  Rng rng(6);
  const MatrixD x = testing::random_matrix(rng, 12, 1000, 3.0);
  const MatrixD r = testing::random_matrix(rng, 12, 1000);
  auto l0 = [&](const MatrixD& xx) { return loss_of<false>(xx, r); };
  auto l1 = [&](const MatrixD& xx) { return loss_of<true>(xx, r); };
  BOOST_TEST(testing::gradient_error(l0, x, grad<double, false>(x, r), rng) < 1e-6);
  BOOST_TEST(testing::gradient_error(l0, x, grad<float, false>(x, r), rng) < 1e-3);
  BOOST_TEST(testing::gradient_error(l1, x, grad<double, true>(x, r), rng) < 1e-6);
  BOOST_TEST(testing::gradient_error(l1, x, grad<float, true>(x, r), rng) < 1e-3);
}

BOOST_AUTO_TEST_CASE(empty_rows_are_rejected) {
  MatrixD x(2, 0), y;
  BOOST_CHECK_THROW(sm::forward<double>(x, y), ShapeError);
}

BOOST_AUTO_TEST_SUITE_END()
