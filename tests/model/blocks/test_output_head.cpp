#include "knprobe/model/blocks/output_head.hpp"

#include <boost/test/unit_test.hpp>

#include "knprobe/core/parallel.hpp"
#include "knprobe/model/blocks/softmax.hpp"
#include "support/finite_diff.hpp"
#include "support/paths.hpp"

using namespace knprobe;
using knprobe::testing::throws_with;
namespace oh = knprobe::blocks::output_head;

namespace {

/// The materialised form: z = x Wᵀ, softmax::target_probability_gradient, then dz W.
template <class T>
void reference(const Matrix<T>& x, const Matrix<T>& w, const std::vector<TokenId>& t,
               Vector<T>& prob, Matrix<T>& grad) {
  Matrix<T> z = x * w.transpose();
  std::vector<TokenId> tt = t;
  for (auto& v : tt) v = std::max<TokenId>(v, 0);
  prob = blocks::softmax::target_probability_gradient<T>(z, tt);
  for (Index b = 0; b < x.rows(); ++b)
    if (t[static_cast<std::size_t>(b)] < 0) {
      z.row(b).setZero();
      prob(b) = 0;
    }
  grad = z * w;
}

double rel(const MatrixD& a, const MatrixD& b) {
  return (a - b).cwiseAbs().maxCoeff() / std::max(b.cwiseAbs().maxCoeff(), 1e-300);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(blocks_output_head)

// Several tiles (V = 10 000 over tiles of 1 MiB / (64 · 8) = 2048 rows, the last one partial), two
// target sets, rows without a target: equal to the materialised softmax and product.
BOOST_AUTO_TEST_CASE(equals_the_materialised_head) {
  Rng rng(19);
  const Index n = 7, H = 64, V = 10000;
  const MatrixD x = testing::random_matrix(rng, n, H, 0.5), w = testing::random_matrix(rng, V, H);
  const std::vector<std::vector<TokenId>> t = {{0, 9999, 2047, 2048, 17, 5000, 17},
                                               {3, -1, 4095, -1, 9998, 0, 6143}};
  std::vector<VectorD> prob;
  std::vector<MatrixD> grad;
  oh::target_gradients<double>(x, w, t, prob, grad);
  BOOST_TEST_REQUIRE(prob.size() == 2u);
  for (std::size_t v = 0; v < 2; ++v) {
    VectorD p;
    MatrixD g;
    reference<double>(x, w, t[v], p, g);
    BOOST_TEST(rel(prob[v], p) < 1e-12);
    BOOST_TEST(rel(grad[v], g) < 1e-12);
    const VectorD only = oh::target_probabilities<double>(x, w, t[v]);
    BOOST_TEST(rel(only, p) < 1e-12);
  }
  BOOST_TEST(prob[1](1) == 0.0);
  BOOST_TEST(grad[1].row(3).isZero(0.0));
  // float: within float rounding of the double values
  std::vector<VectorF> pf;
  std::vector<MatrixF> gf;
  oh::target_gradients<float>(x.cast<float>(), MatrixF(w.cast<float>()), t, pf, gf);
  for (std::size_t v = 0; v < 2; ++v) {
    BOOST_TEST(rel(pf[v].cast<double>(), prob[v]) < 1e-5);
    BOOST_TEST(rel(gf[v].cast<double>(), grad[v]) < 1e-4);
  }
}

BOOST_AUTO_TEST_CASE(gradient_matches_finite_differences) {
  Rng rng(20);
  const Index n = 3, H = 16, V = 40000;  // tiles of 4096 rows (the cap) → 10 tiles
  const MatrixD x = testing::random_matrix(rng, n, H, 2.0), w = testing::random_matrix(rng, V, H);
  const std::vector<TokenId> t = {7, 39999, 8192};
  std::vector<VectorD> prob;
  std::vector<MatrixD> grad;
  oh::target_gradients<double>(x, w, std::span(&t, 1), prob, grad);
  auto loss = [&](const MatrixD& xx) { return oh::target_probabilities<double>(xx, w, t).sum(); };
  BOOST_TEST(testing::gradient_error(loss, x, grad[0], rng, 48) < 1e-6);
}

// Logits around ±1000 (the max grows over the tiles): no overflow, the same as materialised.
BOOST_AUTO_TEST_CASE(is_stable_for_large_logits) {
  Rng rng(21);
  const Index n = 4, H = 8, V = 20000;
  MatrixD w = testing::random_matrix(rng, V, H);
  for (Index j = 0; j < V; ++j) w.row(j) *= 1.0 + double(j) / V;  // later tiles larger
  const MatrixD x = testing::random_matrix(rng, n, H, 300.0);
  const std::vector<TokenId> t = {19999, 1, 12345, 100};
  std::vector<VectorD> prob;
  std::vector<MatrixD> grad;
  oh::target_gradients<double>(x, w, std::span(&t, 1), prob, grad);
  VectorD p;
  MatrixD g;
  reference<double>(x, w, t, p, g);
  BOOST_TEST(prob[0].allFinite());
  BOOST_TEST(grad[0].allFinite());
  BOOST_TEST((prob[0] - p).cwiseAbs().maxCoeff() < 1e-12);
  BOOST_TEST((grad[0] - g).cwiseAbs().maxCoeff() < 1e-9 * std::max(1.0, g.cwiseAbs().maxCoeff()));
}

// A target with P ≈ 0.999: float32 keeps the gradient (∝ 1 − P) to float precision, since the
// target's own term is kept out of the sums instead of cancelling against them.
BOOST_AUTO_TEST_CASE(is_accurate_when_the_target_dominates) {
  Rng rng(24);
  const Index n = 2, H = 32, V = 30000;
  MatrixD w = testing::random_matrix(rng, V, H, 0.1);
  MatrixD x = testing::random_matrix(rng, n, H);
  const std::vector<TokenId> t = {12345, 777};
  for (Index b = 0; b < n; ++b)  // z_bt = 17.4, the others ~ N(0, 0.6²): P ≈ 0.999
    w.row(t[static_cast<std::size_t>(b)]) = 17.4 * x.row(b) / x.row(b).squaredNorm();
  std::vector<VectorD> prob;
  std::vector<MatrixD> grad;
  oh::target_gradients<double>(x, w, std::span(&t, 1), prob, grad);
  BOOST_TEST_REQUIRE(prob[0].minCoeff() > 0.99);
  BOOST_TEST_REQUIRE(prob[0].maxCoeff() < 0.9999);
  std::vector<VectorF> pf;
  std::vector<MatrixF> gf;
  oh::target_gradients<float>(x.cast<float>(), MatrixF(w.cast<float>()), std::span(&t, 1), pf, gf);
  BOOST_TEST(rel(gf[0].cast<double>(), grad[0]) < 1e-5);
}

// Quantized storage (float32 blocks, one column edited) gives the dense matrix's values.
BOOST_AUTO_TEST_CASE(quantized_weights_with_edits_equal_dense) {
  Rng rng(22);
  const Index n = 5, H = 32, V = 30000;
  MatrixF w = testing::random_matrix<float>(rng, V, H);
  QuantizedMatrix q = QuantizedMatrix::from_dense(w);
  const VectorF col = testing::random_vector<float>(rng, V);
  q.set_column(3, col);
  w.col(3) = col;
  const MatrixF x = testing::random_matrix<float>(rng, n, H);
  const std::vector<TokenId> t = {0, 29999, 8191, 8192, 4};
  std::vector<VectorF> pq, pd;
  std::vector<MatrixF> gq, gd;
  oh::target_gradients<float>(x, q, std::span(&t, 1), pq, gq);
  oh::target_gradients<float>(x, w, std::span(&t, 1), pd, gd);
  BOOST_TEST(rel(pq[0].cast<double>(), pd[0].cast<double>()) == 0.0);
  BOOST_TEST(rel(gq[0].cast<double>(), gd[0].cast<double>()) == 0.0);
}

// One thread, 4 threads and 16 threads (more threads than the 13 tiles: some have none) agree to
// float32 rounding (the partials merge in another order).
BOOST_AUTO_TEST_CASE(thread_counts_agree) {
  Rng rng(23);
  const Index n = 6, H = 64, V = 50000;
  const MatrixF x = testing::random_matrix<float>(rng, n, H),
                w = testing::random_matrix<float>(rng, V, H);
  const std::vector<TokenId> t = {1, 2, 3, 49999, 25000, 12};
  auto with_threads = [&](int threads, std::vector<VectorF>& p, std::vector<MatrixF>& g) {
#if defined(_OPENMP)
    const int before = omp_get_max_threads();
    omp_set_num_threads(threads);
#endif
    oh::target_gradients<float>(x, w, std::span(&t, 1), p, g);
#if defined(_OPENMP)
    omp_set_num_threads(before);
#endif
  };
  std::vector<VectorF> p1, p4, p16;
  std::vector<MatrixF> g1, g4, g16;
  with_threads(1, p1, g1);
  with_threads(4, p4, g4);
  with_threads(16, p16, g16);
  BOOST_TEST(rel(p4[0].cast<double>(), p1[0].cast<double>()) < 1e-5);
  BOOST_TEST(rel(g4[0].cast<double>(), g1[0].cast<double>()) < 1e-4);
  BOOST_TEST(rel(p16[0].cast<double>(), p1[0].cast<double>()) < 1e-5);
  BOOST_TEST(rel(g16[0].cast<double>(), g1[0].cast<double>()) < 1e-4);
}

// A target's values do not depend on the other targets asked for in the same call (twins share a
// pass and must equal their single calls bit for bit), for the argmax and for other tokens.
BOOST_AUTO_TEST_CASE(each_target_equals_its_call_alone_bit_for_bit) {
  Rng rng(25);
  const Index n = 4, H = 48, V = 30000;
  const MatrixF x = testing::random_matrix<float>(rng, n, H),
                w = testing::random_matrix<float>(rng, V, H);
  MatrixF z = x * w.transpose();
  std::vector<TokenId> top(static_cast<std::size_t>(n));
  for (Index b = 0; b < n; ++b) z.row(b).maxCoeff(&top[static_cast<std::size_t>(b)]);
  const std::vector<std::vector<TokenId>> sets = {
      top, {5, 29999, -1, 12000}, {12000, top[1], 7, 7}, {-1, -1, -1, top[3]}};
  std::vector<VectorF> p_all;
  std::vector<MatrixF> g_all;
  oh::target_gradients<float>(x, w, sets, p_all, g_all);
  for (std::size_t v = 0; v < sets.size(); ++v) {
    std::vector<VectorF> p;
    std::vector<MatrixF> g;
    oh::target_gradients<float>(x, w, std::span(&sets[v], 1), p, g);
    BOOST_TEST((p[0].array() == p_all[v].array()).all());
    BOOST_TEST((g[0].array() == g_all[v].array()).all());
    BOOST_TEST((oh::target_probabilities<float>(x, w, sets[v]).array() == p[0].array()).all());
  }
}

BOOST_AUTO_TEST_CASE(bad_targets_and_shapes_are_rejected) {
  const MatrixD x = MatrixD::Ones(2, 4), w = MatrixD::Ones(10, 4);
  std::vector<VectorD> prob;
  std::vector<MatrixD> grad;
  const std::vector<std::vector<TokenId>> outside = {{0, 10}}, short_set = {{0}};
  BOOST_TEST((throws_with<ArgumentError>(
      [&] { oh::target_gradients<double>(x, w, outside, prob, grad); }, {"target 10", "[0, 10)"})));
  BOOST_TEST(
      (throws_with<ShapeError>([&] { oh::target_gradients<double>(x, w, short_set, prob, grad); },
                               {"1 targets", "2 rows"})));
  const MatrixD narrow = MatrixD::Ones(2, 3);
  BOOST_TEST((throws_with<ShapeError>(
      [&] { oh::target_gradients<double>(narrow, w, outside, prob, grad); }, {"output_head"})));
}

BOOST_AUTO_TEST_SUITE_END()
