#include "knprobe/model/blocks/embedding.hpp"

#include <boost/test/unit_test.hpp>

#include "support/finite_diff.hpp"

using namespace knprobe;
namespace emb = knprobe::blocks::embedding;

BOOST_AUTO_TEST_SUITE(blocks_embedding)

BOOST_AUTO_TEST_CASE(lookup_scales_rows) {
  Rng rng(13);
  const MatrixD table = testing::random_matrix(rng, 10, 4);
  const std::vector<TokenId> ids{3, 0, 3};
  MatrixD y;
  emb::forward<double>(ids, table, 2.0, y);
  BOOST_TEST((y.row(0) - 2.0 * table.row(3)).norm() == 0.0);
  BOOST_TEST((y.row(2) - y.row(0)).norm() == 0.0);
}

BOOST_AUTO_TEST_CASE(backward_matches_finite_differences) {
  // Loss as a function of the table entries: ⟨r, scale · E[ids]⟩.
  Rng rng(14);
  const MatrixD table = testing::random_matrix(rng, 50, 16);
  const std::vector<TokenId> ids{1, 7, 7, 49, 0};
  const MatrixD r = testing::random_matrix(rng, 5, 16);
  const double scale = 25.298221281347036;
  auto loss = [&](const MatrixD& t) {
    MatrixD y;
    emb::forward<double>(ids, t, scale, y);
    return testing::project(r, y);
  };
  MatrixD rows, grad = MatrixD::Zero(50, 16);
  emb::backward<double>(r, scale, rows);
  emb::scatter_add<double>(ids, rows, grad);
  BOOST_TEST(testing::gradient_error(loss, table, grad, rng, 800) < 1e-6);
}

BOOST_AUTO_TEST_CASE(out_of_range_id_is_named) {
  MatrixD table(4, 2), y;
  const std::vector<TokenId> ids{1, 4};
  BOOST_CHECK_EXCEPTION(emb::forward<double>(ids, table, 1.0, y), ArgumentError,
                        [](const ArgumentError& e) {
                          return std::string(e.what()).find("token id 4") != std::string::npos;
                        });
}

BOOST_AUTO_TEST_SUITE_END()
