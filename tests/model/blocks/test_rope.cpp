#include "knprobe/model/blocks/rope.hpp"

#include <boost/test/unit_test.hpp>
#include <numeric>

#include "support/finite_diff.hpp"

using namespace knprobe;
namespace rope = knprobe::blocks::rope;

BOOST_AUTO_TEST_SUITE(blocks_rope)

BOOST_AUTO_TEST_CASE(pairs_follow_the_style) {
  // One head of dim 4 at position 1, theta 100: angles 1 and 0.1.
  MatrixD x(1, 4);
  x << 1, 2, 3, 4;
  const std::vector<int> pos{1};
  rope::Spec s{1, 4, 100.0, rope::Style::interleaved, 0};
  MatrixD a = x;
  rope::forward<double>(a, pos, s);
  BOOST_TEST(std::abs(a(0, 0) - (std::cos(1.0) - 2 * std::sin(1.0))) < 1e-15);
  BOOST_TEST(std::abs(a(0, 3) - (4 * std::cos(0.1) + 3 * std::sin(0.1))) < 1e-15);
  s.style = rope::Style::half;
  MatrixD b = x;
  rope::forward<double>(b, pos, s);
  BOOST_TEST(std::abs(b(0, 0) - (std::cos(1.0) - 3 * std::sin(1.0))) < 1e-15);
  BOOST_TEST(std::abs(b(0, 3) - (4 * std::cos(0.1) + 2 * std::sin(0.1))) < 1e-15);
}

BOOST_AUTO_TEST_CASE(backward_matches_finite_differences) {
  Rng rng(12);
  for (auto style : {rope::Style::interleaved, rope::Style::half}) {
    const rope::Spec s{4, 256, 1e6, style, 0};
    std::vector<int> pos(12);
    std::iota(pos.begin(), pos.end(), 3);
    const MatrixD x = testing::random_matrix(rng, 12, 1024);
    const MatrixD r = testing::random_matrix(rng, 12, 1024);
    auto loss = [&](const MatrixD& xx) {
      MatrixD y = xx;
      rope::forward<double>(y, pos, s);
      return testing::project(r, y);
    };
    MatrixD gd = r;
    rope::backward<double>(gd, pos, s);
    Matrix<float> gf = r.cast<float>();
    rope::backward<float>(gf, pos, s);
    BOOST_TEST(testing::gradient_error(loss, x, gd, rng) < 1e-6);
    BOOST_TEST(testing::gradient_error(loss, x, gf.cast<double>(), rng) < 1e-3);
  }
}

BOOST_AUTO_TEST_CASE(bad_arguments) {
  MatrixD x(2, 8);
  const std::vector<int> pos{0, 1};
  BOOST_CHECK_THROW(rope::forward<double>(x, pos, rope::Spec{0, 8, 1e4, rope::Style::half, 0}),
                    ArgumentError);
  BOOST_CHECK_THROW(rope::forward<double>(x, pos, rope::Spec{1, 8, 1e4, rope::Style::half, 3}),
                    ArgumentError);
  BOOST_CHECK_THROW(rope::forward<double>(x, pos, rope::Spec{2, 8, 1e4, rope::Style::half, 0}),
                    ShapeError);
  const std::vector<int> one{0};
  BOOST_CHECK_THROW(rope::forward<double>(x, one, rope::Spec{1, 8, 1e4, rope::Style::half, 0}),
                    ShapeError);
}

BOOST_AUTO_TEST_SUITE_END()
