#include "knprobe/core/error.hpp"

#include <boost/test/unit_test.hpp>
#include <string>

BOOST_AUTO_TEST_SUITE(core_error)

BOOST_AUTO_TEST_CASE(require_builds_the_message) {
  try {
    KNPROBE_REQUIRE(1 + 1 == 3, knprobe::ShapeError, "tensor ", "wq", ": expected ", 64);
    BOOST_FAIL("no exception");
  } catch (const knprobe::Error& e) {
    BOOST_TEST(std::string(e.what()) == "tensor wq: expected 64");
  }
  BOOST_CHECK_NO_THROW(KNPROBE_REQUIRE(true, knprobe::ArgumentError, "never"));
}

BOOST_AUTO_TEST_CASE(hierarchy) {
  BOOST_CHECK_THROW(throw knprobe::FormatError("x"), knprobe::Error);
  BOOST_CHECK_THROW(throw knprobe::TokenizerError("x"), knprobe::Error);
  BOOST_CHECK_THROW(throw knprobe::ArgumentError("x"), std::runtime_error);
}

BOOST_AUTO_TEST_SUITE_END()
