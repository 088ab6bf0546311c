#include "knprobe/tokenize/llama2c_tokenizer.hpp"

#include <boost/test/unit_test.hpp>

#include "support/paths.hpp"

using namespace knprobe;

BOOST_AUTO_TEST_SUITE(tokenize_llama2c)

BOOST_AUTO_TEST_CASE(run_c_vectors) {
  const Llama2cTokenizer tok(knprobe::testing::stories_dir() / "tok512.bin", 512);
  BOOST_TEST(tok.encode("Once upon a time") == (std::vector<TokenId>{1, 403, 407, 261, 378}),
             boost::test_tools::per_element());
  BOOST_TEST(tok.encode("héllo") == (std::vector<TokenId>{1, 270, 485, 306, 414}),
             boost::test_tools::per_element());
  BOOST_TEST(tok.encode("") == (std::vector<TokenId>{1}), boost::test_tools::per_element());
  BOOST_TEST(tok.id_to_piece(410) == " ");
  EncodeOptions cont;
  cont.add_special = false;
  cont.dummy_prefix = false;
  BOOST_TEST(tok.encode(" upon a time", cont) == (std::vector<TokenId>{407, 261, 378}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(round_trip_including_byte_fallback) {
  const Llama2cTokenizer tok(knprobe::testing::stories_dir() / "tok512.bin", 512);
  for (std::string s : {"Once upon a time, there was a little girl named Lily.", "héllo wörld",
                        "日本 🙂", "tabs\tand\nnewlines"})
    BOOST_TEST(tok.decode(tok.encode(s)) == s);
}

BOOST_AUTO_TEST_CASE(bad_files) {
  knprobe::testing::TempDir dir;
  const auto p = dir.write("tok.bin", std::string("\x07\x00\x00\x00\x00\x00", 6));
  BOOST_TEST(knprobe::testing::throws_with<FormatError>([&] { Llama2cTokenizer t(p, 512); },
                                                        {"tok.bin", "truncated"}));
  BOOST_CHECK_THROW(Llama2cTokenizer(dir.path() / "missing.bin", 512), FormatError);
}

BOOST_AUTO_TEST_SUITE_END()
