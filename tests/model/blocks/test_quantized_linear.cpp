#include "knprobe/model/blocks/quantized_linear.hpp"

#include <boost/test/unit_test.hpp>
#include <cstring>

#include "knprobe/core/half.hpp"
#include "knprobe/core/rng.hpp"
#include "support/finite_diff.hpp"
#include "support/paths.hpp"

using namespace knprobe;
using knprobe::testing::throws_with;

namespace {

/// Random blocks of `type` for a rows × cols matrix, with finite scales (random bytes elsewhere).
std::vector<std::byte> random_blocks(io::GgmlType type, Index rows, Index cols, Rng& rng) {
  const auto ti = io::ggml_type_info(static_cast<std::uint32_t>(type));
  const std::size_t blocks = static_cast<std::size_t>(rows * cols) / ti.block_size;
  std::vector<std::byte> b(blocks * ti.type_size);
  for (auto& x : b) x = static_cast<std::byte>(rng.below(256));
  auto put_half = [&](std::size_t at, float v) {
    const std::uint16_t h = float_to_half(v);
    std::memcpy(b.data() + at, &h, 2);
  };
  for (std::size_t i = 0; i < blocks; ++i) {
    const std::size_t o = i * ti.type_size;
    switch (type) {
      case io::GgmlType::f32: {
        const float v = static_cast<float>(rng.uniform(-1, 1));
        std::memcpy(b.data() + o, &v, 4);
        break;
      }
      case io::GgmlType::f16:
        put_half(o, static_cast<float>(rng.uniform(-1, 1)));
        break;
      case io::GgmlType::bf16: {
        const float v = static_cast<float>(rng.uniform(-1, 1));
        std::uint32_t u;
        std::memcpy(&u, &v, 4);
        const auto h = static_cast<std::uint16_t>(u >> 16);
        std::memcpy(b.data() + o, &h, 2);
        break;
      }
      case io::GgmlType::q6_k:
        put_half(o + 208, static_cast<float>(rng.uniform(0.001, 0.01)));
        break;
      case io::GgmlType::q4_1:
      case io::GgmlType::q5_1:
      case io::GgmlType::q4_k:
      case io::GgmlType::q5_k:
        put_half(o, static_cast<float>(rng.uniform(0.001, 0.05)));
        put_half(o + 2, static_cast<float>(rng.uniform(0.001, 0.05)));
        break;
      default:  // q4_0, q5_0, q8_0: one scale first
        put_half(o, static_cast<float>(rng.uniform(0.001, 0.05)));
    }
  }
  return b;
}

/// The reference: the whole matrix through io::dequantize (the checked block dequantizers).
MatrixF dense_of(io::GgmlType type, const std::vector<std::byte>& b, Index rows, Index cols) {
  MatrixF m(rows, cols);
  io::dequantize(static_cast<std::uint32_t>(type), b.data(), static_cast<std::size_t>(m.size()),
                 m.data());
  return m;
}

const io::GgmlType k_types[] = {io::GgmlType::f32,  io::GgmlType::f16,  io::GgmlType::bf16,
                                io::GgmlType::q4_0, io::GgmlType::q4_1, io::GgmlType::q5_0,
                                io::GgmlType::q5_1, io::GgmlType::q8_0, io::GgmlType::q4_k,
                                io::GgmlType::q5_k, io::GgmlType::q6_k};

double rel(const MatrixF& a, const MatrixF& b) {
  return (a - b).norm() / std::max(1e-30f, b.norm());
}

}  // namespace

BOOST_AUTO_TEST_SUITE(blocks_quantized_linear)

BOOST_AUTO_TEST_CASE(products_equal_the_dequantized_matrix_for_every_type) {
  Rng rng(11);
  // 300 rows of 256: several tiles and a partial last one; 1, 5 and 70 input rows.
  const Index rows = 300, cols = 256;
  for (auto type : k_types) {
    const auto bytes = random_blocks(type, rows, cols, rng);
    const QuantizedMatrix q(static_cast<std::uint32_t>(type), rows, cols, bytes.data(), nullptr);
    const MatrixF w = dense_of(type, bytes, rows, cols);
    BOOST_REQUIRE(w.allFinite());
    BOOST_TEST((q.to_dense().array() == w.array()).all(), q.type_name());
    BOOST_TEST(q.storage_bytes() == bytes.size());
    for (Index n : {1, 5, 70}) {
      const MatrixF x = testing::random_matrix<float>(rng, n, cols);
      MatrixF y;
      q.multiply_transposed(x, y);
      const MatrixF y_ref = x * w.transpose();
      BOOST_TEST(rel(y, y_ref) < 1e-5, q.type_name() << " n " << n << " " << rel(y, y_ref));
      const MatrixF dy = testing::random_matrix<float>(rng, n, rows);
      MatrixF dx = MatrixF::Ones(n, cols);
      q.multiply_add(dy, dx);
      const MatrixF dx_ref = MatrixF::Ones(n, cols) + dy * w;
      BOOST_TEST(rel(dx, dx_ref) < 1e-5, q.type_name() << " n " << n << " " << rel(dx, dx_ref));
    }
    BOOST_TEST((q.row(123) - VectorF(w.row(123).transpose())).norm() == 0.0f);
    BOOST_TEST((q.column(77) - VectorF(w.col(77))).norm() == 0.0f);
  }
}

BOOST_AUTO_TEST_CASE(products_are_deterministic) {
  Rng rng(12);
  const auto bytes = random_blocks(io::GgmlType::q4_k, 700, 512, rng);
  const QuantizedMatrix q(static_cast<std::uint32_t>(io::GgmlType::q4_k), 700, 512, bytes.data(),
                          nullptr);
  const MatrixF dy = testing::random_matrix<float>(rng, 33, 700);
  MatrixF a = MatrixF::Zero(33, 512), b = MatrixF::Zero(33, 512);
  q.multiply_add(dy, a);
  q.multiply_add(dy, b);
  BOOST_TEST((a.array() == b.array()).all());
}

BOOST_AUTO_TEST_CASE(column_edits_are_exact_and_undo_bit_exactly) {
  Rng rng(13);
  const Index rows = 64, cols = 96;
  const auto bytes = random_blocks(io::GgmlType::q5_0, rows, cols, rng);
  QuantizedMatrix q(static_cast<std::uint32_t>(io::GgmlType::q5_0), rows, cols, bytes.data(),
                    nullptr);
  const MatrixF x = testing::random_matrix<float>(rng, 4, cols);
  const MatrixF dy = testing::random_matrix<float>(rng, 4, rows);
  MatrixF y0, dx0 = MatrixF::Zero(4, cols);
  q.multiply_transposed(x, y0);
  q.multiply_add(dy, dx0);

  const VectorF old = q.column(10);
  const VectorF v = testing::random_matrix<float>(rng, rows, 1);
  q.set_column(10, v);
  q.set_column(40, VectorF::Zero(rows));  // erase
  BOOST_TEST(q.edited_columns() == 2u);
  BOOST_TEST((q.column(10).array() == v.array()).all());
  MatrixF w = dense_of(io::GgmlType::q5_0, bytes, rows, cols);
  w.col(10) = v;
  w.col(40).setZero();
  BOOST_TEST((q.to_dense().array() == w.array()).all());
  BOOST_TEST(q.row(5)(10) == v(5));
  MatrixF y, dx = MatrixF::Zero(4, cols);
  q.multiply_transposed(x, y);
  q.multiply_add(dy, dx);
  BOOST_TEST(rel(y, x * w.transpose()) < 1e-5);
  BOOST_TEST(rel(dx, dy * w) < 1e-5);

  // Writing the stored columns back removes the edits: the products are bit-identical again.
  q.set_column(10, old);
  q.set_column(40, dense_of(io::GgmlType::q5_0, bytes, rows, cols).col(40));
  BOOST_TEST(q.edited_columns() == 0u);
  MatrixF y1, dx1 = MatrixF::Zero(4, cols);
  q.multiply_transposed(x, y1);
  q.multiply_add(dy, dx1);
  BOOST_TEST((y1.array() == y0.array()).all());
  BOOST_TEST((dx1.array() == dx0.array()).all());
}

BOOST_AUTO_TEST_CASE(dense_f32_storage_and_the_linear_overloads) {
  Rng rng(14);
  const MatrixF w = testing::random_matrix<float>(rng, 20, 12);
  const QuantizedMatrix q = QuantizedMatrix::from_dense(w);
  BOOST_TEST(q.type_name() == std::string("F32"));
  const MatrixF x = testing::random_matrix<float>(rng, 3, 12);
  MatrixF y, dx;
  blocks::linear::forward<float>(x, q, y);
  BOOST_TEST(rel(y, x * w.transpose()) < 1e-5);
  const MatrixF dy = testing::random_matrix<float>(rng, 3, 20);
  blocks::linear::backward<float>(dy, q, dx);
  BOOST_TEST(rel(dx, dy * w) < 1e-5);
  blocks::linear::backward_add<float>(dy, q, dx);
  BOOST_TEST(rel(dx, 2 * dy * w) < 1e-6);
  MatrixF e;
  const std::vector<TokenId> ids{3, 19, 0};
  blocks::embedding::forward<float>(ids, q, 2.0f, e);
  for (int t = 0; t < 3; ++t) BOOST_TEST((e.row(t) - 2.0f * w.row(ids[t])).norm() == 0.0f);
}

BOOST_AUTO_TEST_CASE(bad_input_is_named) {
  std::vector<std::byte> b(1024);
  const auto q2k = static_cast<std::uint32_t>(io::GgmlType::q2_k);
  const auto q8 = static_cast<std::uint32_t>(io::GgmlType::q8_0);
  BOOST_TEST(throws_with<FormatError>([&] { QuantizedMatrix(q2k, 1, 256, b.data(), nullptr); },
                                      {"Q2_K", "not supported"}));
  BOOST_TEST(throws_with<ShapeError>([&] { QuantizedMatrix(q8, 2, 40, b.data(), nullptr); },
                                     {"Q8_0", "40"}));
  const QuantizedMatrix q(q8, 2, 32, b.data(), nullptr);
  BOOST_TEST(throws_with<ArgumentError>([&] { q.row(2); }, {"row 2"}));
  BOOST_TEST(throws_with<ArgumentError>([&] { q.column(-1); }, {"column -1"}));
  QuantizedMatrix e = q;
  BOOST_TEST(throws_with<ShapeError>([&] { e.set_column(0, VectorF::Zero(3)); }, {"set_column"}));
  MatrixF y;
  BOOST_TEST(throws_with<ShapeError>([&] { q.multiply_transposed(MatrixF::Zero(1, 31), y); },
                                     {"input x"}));
  MatrixF dx = MatrixF::Zero(1, 32);
  BOOST_TEST(
      throws_with<ShapeError>([&] { q.multiply_add(MatrixF::Zero(1, 3), dx); }, {"gradient dy"}));
  MatrixF e2;
  BOOST_TEST(throws_with<ArgumentError>(
      [&] { blocks::embedding::forward<float>(std::vector<TokenId>{2}, q, 1.0f, e2); },
      {"token id 2"}));
}

BOOST_AUTO_TEST_SUITE_END()
