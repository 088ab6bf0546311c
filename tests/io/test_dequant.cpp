#include "knprobe/io/dequant.hpp"

#include <boost/test/unit_test.hpp>
#include <cstring>

#include "support/paths.hpp"

using namespace knprobe;

namespace {
std::vector<std::byte> from_hex(const std::string& hex) {
  std::vector<std::byte> out(hex.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i)
    out[i] = static_cast<std::byte>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return out;
}
void put_half(std::vector<std::uint8_t>& b, std::size_t at, float v) {
  const std::uint16_t h = float_to_half(v);
  std::memcpy(b.data() + at, &h, 2);
}
std::vector<float> run(io::GgmlType t, const std::vector<std::uint8_t>& b, std::size_t n) {
  std::vector<float> y(n);
  io::dequantize(static_cast<std::uint32_t>(t), reinterpret_cast<const std::byte*>(b.data()), n,
                 y.data());
  return y;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(io_dequant)

BOOST_AUTO_TEST_CASE(hand_computed_blocks) {
  // Q8_0: d = 0.5, q[e] = e - 16 → value (e - 16) / 2.
  std::vector<std::uint8_t> q8(34);
  put_half(q8, 0, 0.5f);
  for (int e = 0; e < 32; ++e)
    q8[2 + e] = static_cast<std::uint8_t>(static_cast<std::int8_t>(e - 16));
  auto y = run(io::GgmlType::q8_0, q8, 32);
  BOOST_TEST(y[0] == -8.0f);
  BOOST_TEST(y[31] == 7.5f);
  // Q4_0: d = 2, qs[l] = 0x93 → element l: (3 - 8)·2 = -10, element l+16: (9 - 8)·2 = 2.
  std::vector<std::uint8_t> q4(18, 0x93);
  put_half(q4, 0, 2.0f);
  y = run(io::GgmlType::q4_0, q4, 32);
  BOOST_TEST(y[0] == -10.0f);
  BOOST_TEST(y[16] == 2.0f);
  // Q5_0: d = 1, qh bit 0 set, qs[0] = 0x21 → e0: (1 + 16) - 16 = 1, e16: 2 - 16 = -14.
  std::vector<std::uint8_t> q5(22, 0);
  put_half(q5, 0, 1.0f);
  q5[2] = 0x01;
  q5[6] = 0x21;
  y = run(io::GgmlType::q5_0, q5, 32);
  BOOST_TEST(y[0] == 1.0f);
  BOOST_TEST(y[16] == -14.0f);
  BOOST_TEST(y[1] == -16.0f);
  // Q4_1: d = 1, m = -3, qs = 0x50 → e0 = 0 - 3, e16 = 5 - 3.
  std::vector<std::uint8_t> q41(20, 0x50);
  put_half(q41, 0, 1.0f);
  put_half(q41, 2, -3.0f);
  y = run(io::GgmlType::q4_1, q41, 32);
  BOOST_TEST(y[0] == -3.0f);
  BOOST_TEST(y[16] == 2.0f);
  // Q4_K: d = 1, dmin = 1; sub-block 0 scale 2 min 1, sub-block 1 scale 3 min 0; qs[0] = 0x74
  // → e0 = 1·2·4 − 1·1 = 7, e32 = 1·3·7 − 0 = 21.
  std::vector<std::uint8_t> qk(144, 0);
  put_half(qk, 0, 1.0f);
  put_half(qk, 2, 1.0f);
  qk[4 + 0] = 2;  // sc_0
  qk[4 + 1] = 3;  // sc_1
  qk[4 + 4] = 1;  // m_0
  qk[16] = 0x74;
  y = run(io::GgmlType::q4_k, qk, 256);
  BOOST_TEST(y[0] == 7.0f);
  BOOST_TEST(y[32] == 21.0f);
  BOOST_TEST(y[1] == -1.0f);
  // Q6_K: d = 0.25 (last), scales[0] = 4; ql[0] = 0x0F, qh[0] = 0x03 → q = 15 | 48 = 63 → 63 − 32 =
  // 31 → 0.25·4·31 = 31.
  std::vector<std::uint8_t> q6(210, 0);
  put_half(q6, 208, 0.25f);
  q6[192] = 4;
  q6[0] = 0x0F;
  q6[128] = 0x03;
  y = run(io::GgmlType::q6_k, q6, 256);
  BOOST_TEST(y[0] == 31.0f);
}

BOOST_AUTO_TEST_CASE(q6_k_equals_its_per_element_form_bit_for_bit) {
  // The library hoists each sub-block's d · scale out of the element loop (so it vectorizes);
  // the values must be exactly those of d · scale · q evaluated per element.
  std::vector<std::uint8_t> b(64 * 210);
  std::uint32_t x = 12345;
  for (auto& v : b) v = static_cast<std::uint8_t>((x = x * 1664525u + 1013904223u) >> 24);
  for (std::size_t k = 0; k < 64; ++k) b[k * 210 + 209] &= 0x3F;  // finite fp16 d
  std::vector<float> got(64 * 256);
  io::dequantize(static_cast<std::uint32_t>(io::GgmlType::q6_k),
                 reinterpret_cast<const std::byte*>(b.data()), got.size(), got.data());
  std::size_t same = 0;
  for (std::size_t k = 0; k < 64; ++k) {
    const std::uint8_t* blk = b.data() + k * 210;
    const auto* sc = reinterpret_cast<const std::int8_t*>(blk + 192);
    const float d = io::detail::fp16_at(blk + 208);
    for (int i = 0; i < 256; ++i) {
      const int h = i / 128, r = i % 128, part = r / 32, l = r % 32;
      const std::uint8_t lo = blk[64 * h + l + (part % 2) * 32], hi = blk[128 + 32 * h + l];
      const int q = (((part < 2 ? lo & 0xF : lo >> 4)) | (((hi >> (2 * part)) & 3) << 4)) - 32;
      const float want = d * sc[8 * h + l / 16 + 2 * part] * static_cast<float>(q);
      same += std::memcmp(&want, &got[k * 256 + static_cast<std::size_t>(i)], sizeof(float)) == 0;
    }
  }
  BOOST_TEST(same == got.size());
}

BOOST_AUTO_TEST_CASE(random_blocks_match_the_gguf_python_package) {
  const auto j =
      knprobe::testing::read_json(knprobe::testing::data_dir() / "gguf" / "dequant_blocks.json");
  int checked = 0;
  for (const auto& blk : j["blocks"]) {
    const auto bytes = from_hex(blk["hex"].get<std::string>());
    const auto want = blk["values"].get<std::vector<float>>();
    std::vector<float> got(want.size());
    io::dequantize(blk["type"].get<std::uint32_t>(), bytes.data(), got.size(), got.data());
    double max_err = 0;
    for (std::size_t i = 0; i < want.size(); ++i)
      max_err = std::max<double>(max_err,
                                 std::abs(got[i] - want[i]) / std::max(1e-3f, std::abs(want[i])));
    BOOST_TEST(max_err < 1e-6, blk["name"].get<std::string>() << " max rel error " << max_err);
    ++checked;
  }
  BOOST_TEST(checked == 10);
}

BOOST_AUTO_TEST_CASE(unsupported_types_fail_loudly) {
  std::vector<std::byte> b(84);
  float y[256];
  BOOST_CHECK_EXCEPTION(
      io::dequantize(10, b.data(), 256, y), FormatError,
      [](const FormatError& e) { return std::string(e.what()).find("Q2_K") != std::string::npos; });
  BOOST_CHECK_THROW(io::dequantize(8, b.data(), 31, y), FormatError);
  BOOST_CHECK_THROW(io::dequantize(99, b.data(), 32, y), FormatError);
}

BOOST_AUTO_TEST_CASE(half_conversions) {
  BOOST_TEST(half_to_float(0x3C00) == 1.0f);
  BOOST_TEST(half_to_float(0x7BFF) == 65504.0f);
  BOOST_TEST(std::isinf(half_to_float(0xFC00)));
  BOOST_TEST(std::isnan(half_to_float(0x7E00)));
  BOOST_TEST(half_to_float(0x0001) == std::ldexp(1.0f, -24));
  for (std::uint32_t h = 0; h < 0x7C00; h += 7) BOOST_TEST(float_to_half(half_to_float(h)) == h);
  BOOST_TEST(bf16_to_float(0x4049) == 3.140625f);
}

BOOST_AUTO_TEST_CASE(non_finite_values_and_scales_are_found) {
  using io::GgmlType;
  auto type = [](GgmlType t) { return static_cast<std::uint32_t>(t); };
  // Q8_0: two blocks of 34 bytes, d (fp16) first; an infinite d in block 1.
  std::vector<std::byte> q8(68, std::byte{0});
  BOOST_TEST(io::first_non_finite(type(GgmlType::q8_0), q8.data(), 64) == 64u);
  q8[34] = std::byte{0x00};
  q8[35] = std::byte{0x7C};  // +inf
  BOOST_TEST(io::first_non_finite(type(GgmlType::q8_0), q8.data(), 64) == 32u);
  // Q4_1: m right after d.
  std::vector<std::byte> q41(20, std::byte{0});
  q41[3] = std::byte{0xFE};  // m = NaN (exponent all ones, mantissa set)
  BOOST_TEST(io::first_non_finite(type(GgmlType::q4_1), q41.data(), 32) == 0u);
  // Q6_K: d is the last fp16 of the 210-byte block.
  std::vector<std::byte> q6(210, std::byte{0});
  BOOST_TEST(io::first_non_finite(type(GgmlType::q6_k), q6.data(), 256) == 256u);
  q6[209] = std::byte{0x7C};
  BOOST_TEST(io::first_non_finite(type(GgmlType::q6_k), q6.data(), 256) == 0u);
  // F16 / BF16 / F32 element by element.
  const std::vector<std::uint16_t> h{0x3C00, 0x7E00, 0x3C00};
  BOOST_TEST(io::first_non_finite(type(GgmlType::f16), reinterpret_cast<const std::byte*>(h.data()),
                                  3) == 1u);
  const std::vector<std::uint16_t> bf{0x3F80, 0x3F80, 0x7F80};
  BOOST_TEST(io::first_non_finite(type(GgmlType::bf16),
                                  reinterpret_cast<const std::byte*>(bf.data()), 3) == 2u);
  const std::vector<float> f{1.0f, 2.0f, -std::numeric_limits<float>::infinity()};
  BOOST_TEST(io::first_non_finite(type(GgmlType::f32), reinterpret_cast<const std::byte*>(f.data()),
                                  3) == 2u);
}

BOOST_AUTO_TEST_SUITE_END()
