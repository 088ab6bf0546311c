#include "knprobe/model/blocks/rms_norm.hpp"

#include <boost/test/unit_test.hpp>

#include "support/finite_diff.hpp"

using namespace knprobe;
namespace rms = knprobe::blocks::rms_norm;

namespace {
template <class T>
MatrixD rms_grad(const MatrixD& x, const VectorD& w, double eps, rms::WeightForm form,
                 const MatrixD& r) {
  Matrix<T> y, dx;
  rms::Cache<T> cache;
  const Matrix<T> xt = x.cast<T>();
  rms::forward<T>(xt, w.cast<T>(), static_cast<T>(eps), form, y, cache);
  rms::backward<T>(r.cast<T>(), xt, w.cast<T>(), form, cache, dx);
  return dx.template cast<double>();
}
}  // namespace

BOOST_AUTO_TEST_SUITE(blocks_rms_norm)

BOOST_AUTO_TEST_CASE(gemma_form_adds_one) {
  MatrixD x(1, 2), y1, y2;
  x << 3, 4;  // rms = sqrt(12.5)
  VectorD w(2);
  w << 0.5, -0.25;
  rms::Cache<double> c;
  rms::forward<double>(x, w, 0.0, rms::WeightForm::offset_one, y1, c);
  rms::forward<double>(x, VectorD(w.array() + 1.0), 0.0, rms::WeightForm::plain, y2, c);
  BOOST_TEST((y1 - y2).norm() == 0.0);
  BOOST_TEST(std::abs(y2(0, 0) - 3 / std::sqrt(12.5) * 1.5) < 1e-15);
}

BOOST_AUTO_TEST_CASE(backward_matches_finite_differences) {
  Rng rng(4);
  for (auto form : {rms::WeightForm::plain, rms::WeightForm::offset_one}) {
    const MatrixD x = testing::random_matrix(rng, 24, 640);
    const VectorD w = testing::random_vector(rng, 640, 0.3, 0.5);
    const MatrixD r = testing::random_matrix(rng, 24, 640);
    auto loss = [&](const MatrixD& xx) {
      MatrixD y;
      rms::Cache<double> c;
      rms::forward<double>(xx, w, 1e-6, form, y, c);
      return testing::project(r, y);
    };
    BOOST_TEST(testing::gradient_error(loss, x, rms_grad<double>(x, w, 1e-6, form, r), rng) < 1e-6);
    BOOST_TEST(testing::gradient_error(loss, x, rms_grad<float>(x, w, 1e-6, form, r), rng) < 1e-3);
  }
}

BOOST_AUTO_TEST_CASE(bad_arguments) {
  MatrixD x(2, 4), y;
  rms::Cache<double> c;
  BOOST_CHECK_THROW(rms::forward<double>(x, VectorD::Ones(5), 1e-6, rms::WeightForm::plain, y, c),
                    ShapeError);
}

BOOST_AUTO_TEST_SUITE_END()
