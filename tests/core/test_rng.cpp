#include "knprobe/core/rng.hpp"

#include <boost/test/unit_test.hpp>
#include <cmath>

BOOST_AUTO_TEST_SUITE(core_rng)

BOOST_AUTO_TEST_CASE(same_seed_same_stream) {
  knprobe::Rng a(42), b(42), c(43);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const double x = a.uniform();
    BOOST_TEST(x == b.uniform());
    differs = differs || x != c.uniform();
    BOOST_TEST((x >= 0.0 && x < 1.0));
  }
  BOOST_TEST(differs);
  // mt19937_64 is fully specified: the 10000th output of the default seed is fixed by the standard.
  knprobe::Rng d(5489);
  std::uint64_t v = 0;
  for (int i = 0; i < 10000; ++i) v = d.next();
  BOOST_TEST(v == 9981545732273789042ULL);
}

BOOST_AUTO_TEST_CASE(below_and_normal_are_sane) {
  knprobe::Rng r(1);
  double s = 0, s2 = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    BOOST_TEST(r.below(7) < 7u);
    const double z = r.normal();
    s += z;
    s2 += z * z;
  }
  BOOST_TEST(std::abs(s / n) < 0.03);
  BOOST_TEST(std::abs(s2 / n - 1.0) < 0.05);
}

BOOST_AUTO_TEST_SUITE_END()
