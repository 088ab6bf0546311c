#include "knprobe/io/llama2c.hpp"

#include <boost/test/unit_test.hpp>

#include "support/paths.hpp"

using namespace knprobe;
using knprobe::testing::throws_with;

BOOST_AUTO_TEST_SUITE(io_llama2c)

BOOST_AUTO_TEST_CASE(reads_stories260k) {
  const auto w = io::read_llama2c(knprobe::testing::stories_dir() / "stories260K.bin");
  const auto& c = w.config;
  BOOST_TEST(c.dim == 64);
  BOOST_TEST(c.hidden_dim == 172);
  BOOST_TEST(c.n_layers == 5);
  BOOST_TEST(c.n_heads == 8);
  BOOST_TEST(c.n_kv_heads == 4);
  BOOST_TEST(c.vocab_size == 512);
  BOOST_TEST(c.seq_len == 512);
  BOOST_TEST(c.shared_classifier);
  BOOST_TEST(w.wk[0].rows() == 32);
  BOOST_TEST(w.w2[4].cols() == 172);
  BOOST_TEST((w.wcls - w.token_embedding).norm() == 0.0f);
  BOOST_TEST(w.rms_final.size() == 64);
  BOOST_TEST(std::isfinite(w.w3[4].sum()));
  BOOST_TEST(w.rms_att[0].norm() > 0.0f);
}

BOOST_AUTO_TEST_CASE(truncated_or_bogus_files_are_named) {
  knprobe::testing::TempDir dir;
  const auto bytes =
      knprobe::testing::read_bytes(knprobe::testing::stories_dir() / "stories260K.bin");
  const std::string s(bytes.begin(), bytes.end());
  auto p = dir.write("cut.bin", s.substr(0, s.size() - 4));
  BOOST_TEST(throws_with<FormatError>([&] { io::read_llama2c(p); }, {"cut.bin", "truncated"}));
  p = dir.write("short.bin", s.substr(0, 10));
  BOOST_TEST(throws_with<FormatError>([&] { io::read_llama2c(p); }, {"short.bin"}));
  std::string bad = s;
  bad[12] = 3;  // n_heads = 3 does not divide dim 64
  bad[13] = bad[14] = bad[15] = 0;
  p = dir.write("heads.bin", bad);
  BOOST_TEST(throws_with<FormatError>([&] { io::read_llama2c(p); }, {"n_heads"}));
}

BOOST_AUTO_TEST_CASE(non_finite_weights_are_named) {
  knprobe::testing::TempDir dir;
  const auto bytes =
      knprobe::testing::read_bytes(knprobe::testing::stories_dir() / "stories260K.bin");
  std::string s(bytes.begin(), bytes.end());
  // token_embedding is first ([512 × 64] floats after the 28-byte header); rms_att follows.
  const float nan = std::nanf("");
  std::memcpy(s.data() + 28 + 4 * (512 * 64 + 70), &nan, 4);  // rms_att of layer 1, element 6
  const auto p = dir.write("nan.bin", s);
  BOOST_TEST(throws_with<NumericError>([&] { io::read_llama2c(p); },
                                       {"nan.bin", "rms_att of layer 1", "element 6 is NaN"}));
}

BOOST_AUTO_TEST_SUITE_END()
