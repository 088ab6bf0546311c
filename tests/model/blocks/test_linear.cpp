#include "knprobe/model/blocks/linear.hpp"

#include <boost/test/unit_test.hpp>

#include "support/finite_diff.hpp"

using namespace knprobe;
namespace linear = knprobe::blocks::linear;

namespace {
template <class T>
MatrixD linear_grad(const MatrixD& x, const MatrixD& w, const VectorD& b, const MatrixD& r) {
  Matrix<T> y, dx;
  linear::forward<T>(x.cast<T>(), w.cast<T>(), b.cast<T>(), y);
  linear::backward<T>(r.cast<T>(), w.cast<T>(), dx);
  return dx.template cast<double>();
}
}  // namespace

BOOST_AUTO_TEST_SUITE(blocks_linear)

BOOST_AUTO_TEST_CASE(forward_is_x_wt_plus_b) {
  MatrixD x(1, 2), w(3, 2), y;
  x << 1, 2;
  w << 1, 0, 0, 1, 1, 1;
  VectorD b(3);
  b << 0.5, -0.5, 0;
  linear::forward<double>(x, w, b, y);
  BOOST_TEST(y(0, 0) == 1.5);
  BOOST_TEST(y(0, 1) == 1.5);
  BOOST_TEST(y(0, 2) == 3.0);
}

BOOST_AUTO_TEST_CASE(backward_matches_finite_differences) {
  Rng rng(1);
  const MatrixD x = testing::random_matrix(rng, 24, 768);
  const MatrixD w = testing::random_matrix(rng, 3072, 768, 0.02);
  const VectorD b = testing::random_vector(rng, 3072);
  const MatrixD r = testing::random_matrix(rng, 24, 3072);
  auto loss = [&](const MatrixD& xx) {
    MatrixD y;
    linear::forward<double>(xx, w, b, y);
    return testing::project(r, y);
  };
  BOOST_TEST(testing::gradient_error(loss, x, linear_grad<double>(x, w, b, r), rng) < 1e-6);
  BOOST_TEST(testing::gradient_error(loss, x, linear_grad<float>(x, w, b, r), rng) < 1e-3);
}

BOOST_AUTO_TEST_CASE(mismatched_shapes_are_named) {
  MatrixD x(2, 3), w(4, 5), y;
  BOOST_CHECK_EXCEPTION(linear::forward<double>(x, w, y), ShapeError, [](const ShapeError& e) {
    return std::string(e.what()).find("input x") != std::string::npos;
  });
  MatrixD w2(4, 3);
  VectorD bad(2);
  BOOST_CHECK_THROW(linear::forward<double>(x, w2, bad, y), knprobe::Error);
  MatrixD dy(2, 7), dx;
  BOOST_CHECK_THROW(linear::backward<double>(dy, w2, dx), ShapeError);
}

BOOST_AUTO_TEST_SUITE_END()
