#include "knprobe/probe/quadrature.hpp"

#include <boost/test/unit_test.hpp>
#include <cmath>

using namespace knprobe;

namespace {
double integrate(const QuadratureRule& r, auto f) {
  double s = 0;
  for (std::size_t k = 0; k < r.nodes.size(); ++k) s += r.weights[k] * f(r.nodes[k]);
  return s;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(probe_quadrature)

BOOST_AUTO_TEST_CASE(rules_integrate_what_they_should) {
  for (int m : {1, 2, 5, 20}) {
    const auto gl = quadrature_rule(Quadrature::gauss_legendre, m);
    for (int deg = 0; deg <= 2 * m - 1; ++deg)
      BOOST_TEST(std::abs(integrate(gl, [&](double x) { return std::pow(x, deg); }) -
                          1.0 / (deg + 1)) < 1e-13,
                 "m " << m << " degree " << deg);
  }
  const auto left = quadrature_rule(Quadrature::left_riemann, 4);
  BOOST_TEST(left.nodes.front() == 0.0);
  BOOST_TEST(left.nodes.back() == 0.75);
  BOOST_TEST(std::abs(integrate(left, [](double x) { return x; }) - 0.375) < 1e-15);
  const auto trap = quadrature_rule(Quadrature::trapezoid, 4);
  BOOST_TEST(trap.nodes.size() == 5u);
  BOOST_TEST(std::abs(integrate(trap, [](double x) { return x; }) - 0.5) < 1e-15);
  BOOST_TEST(std::abs(integrate(quadrature_rule(Quadrature::gauss_legendre, 20),
                                [](double x) { return std::exp(x); }) -
                      (std::exp(1.0) - 1.0)) < 1e-14);
}

BOOST_AUTO_TEST_CASE(zero_steps_is_an_error) {
  BOOST_CHECK_THROW(quadrature_rule(Quadrature::left_riemann, 0), ArgumentError);
  BOOST_CHECK_THROW(quadrature_rule(Quadrature::gauss_legendre, -3), ArgumentError);
}

BOOST_AUTO_TEST_SUITE_END()
