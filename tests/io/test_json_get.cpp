// io/json_get.hpp: integers only when the JSON number is one and in range; finite numbers;
// errors name where the value came from.
#include "knprobe/io/json_get.hpp"

#include <boost/test/unit_test.hpp>

#include "support/paths.hpp"

using namespace knprobe;
using knprobe::testing::throws_with;
using nlohmann::json;

BOOST_AUTO_TEST_SUITE(io_json_get)

BOOST_AUTO_TEST_CASE(integers_are_integers_in_range) {
  BOOST_TEST(io::json_int<int>(json(32), 1, 64, "n_embd") == 32);
  BOOST_TEST(io::json_int<std::size_t>(json(7u), 0, 10, "id") == 7u);
  for (const json& bad : {json(32.7), json(4294967328LL), json("32"), json(true), json(nullptr),
                          json(-1), json(1e3), json(1ULL << 63)})
    BOOST_TEST(throws_with<FormatError>([&] { (void)io::json_int<int>(bad, 0, 100000, "cfg: n"); },
                                        {"cfg: n", "expected an integer in [0, 100000]"}),
               bad.dump());
  BOOST_TEST(io::json_int<long long>(json(1LL << 40), 0, 1LL << 41, "x") == (1LL << 40));
  BOOST_TEST(throws_with<FormatError>(
      [&] { (void)io::json_int<int>(json(1LL << 40), 0, 2147483647, "lineid"); }, {"lineid"}));
}

BOOST_AUTO_TEST_CASE(numbers_strings_bools_keys_and_text) {
  BOOST_TEST(io::json_number(json(0.5), 0, 1, "t") == 0.5);
  BOOST_TEST(io::json_number(json(3), 0, 10, "t") == 3.0);
  BOOST_TEST(throws_with<FormatError>([&] { (void)io::json_number(json(2.0), 0, 1, "t"); }, {"t"}));
  BOOST_TEST(throws_with<FormatError>([&] { (void)io::json_number(json("1"), 0, 1, "t"); }, {"t"}));
  BOOST_TEST(throws_with<FormatError>([&] { (void)io::json_bool(json(1), "flag"); }, {"flag"}));
  BOOST_TEST(throws_with<FormatError>([&] { (void)io::json_string(json(1), "s"); }, {"s"}));
  BOOST_TEST(throws_with<FormatError>([&] { (void)io::json_at(json::object(), "k", "f.json"); },
                                      {"f.json", "missing key 'k'"}));
  BOOST_TEST(throws_with<FormatError>([&] { (void)io::parse_json("{\"a\":", "f.json"); },
                                      {"f.json", "not valid JSON"}));
  json nan_inside{{"a", {1.0, std::nan("")}}};
  BOOST_TEST(throws_with<NumericError>([&] { io::require_finite_json(nan_inside, "out.json"); },
                                       {"out.json.a[1]"}));
  BOOST_CHECK_NO_THROW(io::require_finite_json(json{{"a", 1.5}}, "out.json"));
}

BOOST_AUTO_TEST_SUITE_END()
