#include "knprobe/model/blocks/attention.hpp"

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "support/finite_diff.hpp"

using namespace knprobe;
namespace attn = knprobe::blocks::attention;

namespace {

struct Inputs {
  MatrixD q, k, v, r;
};

Inputs make_inputs(Rng& rng, const attn::Shape& s) {
  const Index dh = s.head_dim;
  return {testing::random_matrix(rng, Index(s.batch) * s.q_len, s.n_heads * dh),
          testing::random_matrix(rng, Index(s.batch) * s.kv_len, s.n_kv_heads * dh),
          testing::random_matrix(rng, Index(s.batch) * s.kv_len, s.n_kv_heads * dh),
          testing::random_matrix(rng, Index(s.batch) * s.q_len, s.n_heads * dh)};
}

double loss_of(const attn::Shape& s, const MatrixD& q, const MatrixD& k, const MatrixD& v,
               const MatrixD& r) {
  MatrixD out;
  attn::Cache<double> c;
  attn::forward<double>(q, k, v, s, out, c);
  return testing::project(r, out);
}

template <class T>
std::array<MatrixD, 3> grads(const attn::Shape& s, const Inputs& in) {
  const Matrix<T> q = in.q.cast<T>(), k = in.k.cast<T>(), v = in.v.cast<T>();
  Matrix<T> out, dq, dk, dv;
  attn::Cache<T> c;
  attn::forward<T>(q, k, v, s, out, c);
  attn::backward<T>(in.r.cast<T>(), q, k, v, s, c, dq, dk, dv);
  return {dq.template cast<double>(), dk.template cast<double>(), dv.template cast<double>()};
}

void check_gradients(const attn::Shape& s, std::uint64_t seed) {
  Rng rng(seed);
  Inputs in = make_inputs(rng, s);
  in.q *= 0.3;  // keep the softmax away from one-hot so every path carries gradient
  const auto gd = grads<double>(s, in);
  const auto gf = grads<float>(s, in);
  auto lq = [&](const MatrixD& x) { return loss_of(s, x, in.k, in.v, in.r); };
  auto lk = [&](const MatrixD& x) { return loss_of(s, in.q, x, in.v, in.r); };
  auto lv = [&](const MatrixD& x) { return loss_of(s, in.q, in.k, x, in.r); };
  BOOST_TEST(testing::gradient_error(lq, in.q, gd[0], rng) < 1e-6);
  BOOST_TEST(testing::gradient_error(lk, in.k, gd[1], rng) < 1e-6);
  BOOST_TEST(testing::gradient_error(lv, in.v, gd[2], rng) < 1e-6);
  BOOST_TEST(testing::gradient_error(lq, in.q, gf[0], rng) < 1e-3);
  BOOST_TEST(testing::gradient_error(lk, in.k, gf[1], rng) < 1e-3);
  BOOST_TEST(testing::gradient_error(lv, in.v, gf[2], rng) < 1e-3);
}

attn::Shape shape(int batch, int q_len, int kv_len, int heads, int kv_heads, int dh,
                  attn::Mask mask) {
  attn::Shape s;
  s.batch = batch;
  s.q_len = q_len;
  s.kv_len = kv_len;
  s.q_offset = kv_len - q_len;
  s.n_heads = heads;
  s.n_kv_heads = kv_heads;
  s.head_dim = dh;
  s.mask = mask;
  s.scale = 1.0 / std::sqrt(double(dh));
  return s;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(blocks_attention)

BOOST_AUTO_TEST_CASE(forward_matches_naive_loops) {
  Rng rng(7);
  attn::Shape s = shape(2, 6, 6, 4, 2, 8, attn::Mask::causal);
  s.window = 3;
  const Inputs in = make_inputs(rng, s);
  MatrixD out;
  attn::Cache<double> c;
  attn::forward<double>(in.q, in.k, in.v, s, out, c);
  for (int b = 0; b < 2; ++b)
    for (int h = 0; h < 4; ++h)
      for (int i = 0; i < 6; ++i) {
        const int g = h / 2;
        std::vector<double> w(6, 0.0);
        double z = 0;
        for (int j = 0; j < 6; ++j) {
          if (j > i || i - j >= 3) continue;
          double d = 0;
          for (int e = 0; e < 8; ++e) d += in.q(b * 6 + i, h * 8 + e) * in.k(b * 6 + j, g * 8 + e);
          w[j] = std::exp(d * s.scale);
          z += w[j];
        }
        for (int e = 0; e < 8; ++e) {
          double o = 0;
          for (int j = 0; j < 6; ++j) o += w[j] / z * in.v(b * 6 + j, g * 8 + e);
          BOOST_TEST(std::abs(o - out(b * 6 + i, h * 8 + e)) < 1e-12);
        }
        const Index row = (b * 4 + h) * 6 + i;
        if (i < 5) BOOST_TEST(c.probs(row, 5) == 0.0);       // future key: hidden
        if (i >= 3) BOOST_TEST(c.probs(row, i - 3) == 0.0);  // outside the window: hidden
      }
}

BOOST_AUTO_TEST_CASE(bidirectional_multi_head) {
  check_gradients(shape(2, 12, 12, 12, 12, 64, attn::Mask::bidirectional), 8);
}

BOOST_AUTO_TEST_CASE(causal_grouped_query) {
  check_gradients(shape(2, 12, 12, 8, 2, 32, attn::Mask::causal), 9);
}

BOOST_AUTO_TEST_CASE(causal_sliding_window_multi_query) {
  attn::Shape s = shape(2, 12, 12, 4, 1, 64, attn::Mask::causal);
  s.window = 5;
  check_gradients(s, 10);
}

BOOST_AUTO_TEST_CASE(suffix_queries_over_cached_prefix) {
  // Three recomputed query rows at positions 9..11 over 12 keys: the causal shortcut's shape.
  check_gradients(shape(3, 3, 12, 4, 2, 16, attn::Mask::causal), 11);
}

BOOST_AUTO_TEST_CASE(bad_arguments_are_named) {
  MatrixD q(4, 8), k(4, 8), v(4, 8), out;
  attn::Cache<double> c;
  auto expect = [&](attn::Shape s, const std::string& word) {
    BOOST_CHECK_EXCEPTION(attn::forward<double>(q, k, v, s, out, c), knprobe::Error,
                          [&](const knprobe::Error& e) {
                            return std::string(e.what()).find(word) != std::string::npos;
                          });
  };
  attn::Shape s = shape(1, 4, 4, 2, 2, 4, attn::Mask::causal);
  attn::Shape bad = s;
  bad.n_heads = 0;
  expect(bad, "n_heads");
  bad = s;
  bad.n_kv_heads = 0;
  expect(bad, "n_kv_heads");
  bad = s;
  bad.window = 0;
  expect(bad, "window");
  bad = s;
  bad.n_kv_heads = 3;
  expect(bad, "multiple");
  bad = s;
  bad.head_dim = 3;
  expect(bad, "attention::forward q");
  bad = s;
  bad.q_offset = 2;
  expect(bad, "kv_len");
}

BOOST_AUTO_TEST_SUITE_END()
