#include "knprobe/model/blocks/layer_norm.hpp"

#include <boost/test/unit_test.hpp>

#include "support/finite_diff.hpp"

using namespace knprobe;
namespace ln = knprobe::blocks::layer_norm;

namespace {
template <class T>
MatrixD ln_grad(const MatrixD& x, const VectorD& g, const VectorD& b, double eps,
                const MatrixD& r) {
  Matrix<T> y, dx;
  ln::Cache<T> cache;
  ln::forward<T>(x.cast<T>(), g.cast<T>(), b.cast<T>(), static_cast<T>(eps), y, cache);
  ln::backward<T>(r.cast<T>(), g.cast<T>(), cache, dx);
  return dx.template cast<double>();
}
}  // namespace

BOOST_AUTO_TEST_SUITE(blocks_layer_norm)

BOOST_AUTO_TEST_CASE(output_has_zero_mean_unit_variance) {
  Rng rng(2);
  const MatrixD x = testing::random_matrix(rng, 5, 64, 3.0);
  MatrixD y;
  ln::Cache<double> cache;
  ln::forward<double>(x, VectorD::Ones(64), VectorD::Zero(64), 0.0, y, cache);
  for (Index r = 0; r < y.rows(); ++r) {
    BOOST_TEST(std::abs(y.row(r).mean()) < 1e-12);
    BOOST_TEST(std::abs(y.row(r).squaredNorm() / 64 - 1.0) < 1e-12);
  }
}

BOOST_AUTO_TEST_CASE(backward_matches_finite_differences) {
  Rng rng(3);
  for (double eps : {1e-12, 1e-5}) {
    const MatrixD x = testing::random_matrix(rng, 24, 768);
    const VectorD g = testing::random_vector(rng, 768, 0.5, 1.0);
    const VectorD b = testing::random_vector(rng, 768);
    const MatrixD r = testing::random_matrix(rng, 24, 768);
    auto loss = [&](const MatrixD& xx) {
      MatrixD y;
      ln::Cache<double> c;
      ln::forward<double>(xx, g, b, eps, y, c);
      return testing::project(r, y);
    };
    BOOST_TEST(testing::gradient_error(loss, x, ln_grad<double>(x, g, b, eps, r), rng) < 1e-6);
    BOOST_TEST(testing::gradient_error(loss, x, ln_grad<float>(x, g, b, eps, r), rng) < 1e-3);
  }
}

BOOST_AUTO_TEST_CASE(bad_arguments) {
  MatrixD x(2, 4), y;
  ln::Cache<double> c;
  BOOST_CHECK_THROW(ln::forward<double>(x, VectorD::Ones(3), VectorD::Zero(4), 1e-5, y, c),
                    ShapeError);
  BOOST_CHECK_THROW(ln::forward<double>(x, VectorD::Ones(4), VectorD::Zero(4), -1.0, y, c),
                    ArgumentError);
}

BOOST_AUTO_TEST_SUITE_END()
