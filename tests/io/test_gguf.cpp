#include "knprobe/io/gguf.hpp"

#include <boost/test/unit_test.hpp>
#include <cstdio>
#include <cstring>

#include "support/paths.hpp"

using namespace knprobe;
using knprobe::testing::TempDir;
using knprobe::testing::throws_with;

namespace {
std::filesystem::path small() {
  return knprobe::testing::data_dir() / "gguf" / "small.gguf";
}

/// A GGUF v3 file with no tensors and the given key / value bytes (each already encoded).
std::string gguf_with(const std::vector<std::string>& kvs) {
  std::string b;
  auto put = [&](auto v) { b.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
  put(std::uint32_t(0x46554747u));
  put(std::uint32_t(3));
  put(std::uint64_t(0));
  put(std::uint64_t(kvs.size()));
  for (const auto& kv : kvs) b += kv;
  b.resize((b.size() + 31) / 32 * 32, '\0');
  return b;
}

/// One key whose value is an array of `n` elements of GGUF type `elem`, element i = f(i) bytes.
template <class F>
std::string array_kv(const std::string& key, std::uint32_t elem, std::uint64_t n, F&& f) {
  std::string b;
  auto put = [&](auto v) { b.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
  put(std::uint64_t(key.size()));
  b += key;
  put(std::uint32_t(9));  // array
  put(elem);
  put(n);
  for (std::uint64_t i = 0; i < n; ++i) b += f(i);
  return b;
}

template <class T>
std::string raw(T v) {
  return std::string(reinterpret_cast<const char*>(&v), sizeof(v));
}

std::string small_bytes() {
  const auto v = knprobe::testing::read_bytes(small());
  return std::string(v.begin(), v.end());
}
}  // namespace

BOOST_AUTO_TEST_SUITE(io_gguf)

BOOST_AUTO_TEST_CASE(metadata_of_every_type) {
  io::GgufFile f(small());
  BOOST_TEST(f.version() == 3u);
  BOOST_TEST(f.get_string("general.architecture") == "toy");
  BOOST_TEST(f.get_int("t.u8") == 200);
  BOOST_TEST(f.get_int("t.i8") == -100);
  BOOST_TEST(f.get_int("t.u16") == 60000);
  BOOST_TEST(f.get_int("t.i16") == -30000);
  BOOST_TEST(f.get_int("t.u32") == 4000000000LL);
  BOOST_TEST(f.get_int("t.i32") == -2000000000LL);
  BOOST_TEST(f.get_double("t.f32") == 1.5);
  BOOST_TEST(f.get_int("t.bool") == 1);
  BOOST_TEST(f.get_string("t.str") == "héllo 世界");
  BOOST_TEST(f.get_int("t.u64") == (1LL << 40) + 3);
  BOOST_TEST(f.get_int("t.i64") == -(1LL << 40) - 3);
  BOOST_TEST(f.get_double("t.f64") == 2.718281828459045);
  const auto& arr = f.get("t.arr_i32").as_array("t.arr_i32");
  BOOST_TEST(arr.size() == 3u);
  BOOST_TEST(arr[1].as_int("") == -2);
  const auto& sarr = f.get("t.arr_str").as_array("t.arr_str");
  BOOST_TEST(sarr[1].as_string("") == "bc");
  BOOST_TEST(sarr[2].as_string("") == "");
  BOOST_TEST(
      throws_with<FormatError>([&] { f.get("missing.key"); }, {"small.gguf", "missing.key"}));
  BOOST_CHECK_THROW(f.get_string("t.u8"), FormatError);
}

BOOST_AUTO_TEST_CASE(tensors_match_the_gguf_python_package) {
  io::GgufFile f(small());
  const auto expected =
      knprobe::testing::read_json(knprobe::testing::data_dir() / "gguf" / "small.json");
  BOOST_TEST(f.tensors().size() == expected["tensors"].size());
  for (auto it = expected["tensors"].begin(); it != expected["tensors"].end(); ++it) {
    const auto& info = f.tensor(it.key());
    BOOST_TEST(io::ggml_type_info(info.type).name == it.value()["type"].get<std::string>());
    BOOST_TEST(info.ne == it.value()["ne"].get<std::vector<std::uint64_t>>(),
               boost::test_tools::per_element());
    const auto values = f.dequantize(it.key());
    const auto want = it.value()["values"].get<std::vector<float>>();
    BOOST_REQUIRE(values.size() == want.size());
    for (std::size_t i = 0; i < want.size(); ++i)
      BOOST_TEST(std::abs(values[i] - want[i]) <= 1e-6f * std::max(1.0f, std::abs(want[i])));
    const MatrixF m = f.matrix(it.key());
    BOOST_TEST(m.rows() == static_cast<Index>(info.ne[1]));
    BOOST_TEST(m(1, 0) == values[info.ne[0]]);
  }
}

BOOST_AUTO_TEST_CASE(every_truncation_is_a_named_error) {
  TempDir dir;
  const std::string bytes = small_bytes();
  // Everything up to the end of the last tensor's data is needed (trailing padding is not).
  io::GgufFile good(small());
  std::size_t needed = 0;
  for (const auto& t : good.tensors())
    needed = std::max<std::size_t>(needed, good.data_offset() + t.offset + t.n_bytes);
  BOOST_TEST(needed <= bytes.size());
  for (std::size_t n = 0; n < needed; n += (n < 400 ? 1 : 37)) {
    const auto p = dir.write("cut.gguf", bytes.substr(0, n));
    BOOST_TEST(throws_with<FormatError>([&] { io::GgufFile f(p); }, {"cut.gguf"}),
               "truncation at " << n);
  }
  BOOST_CHECK_NO_THROW(io::GgufFile(dir.write("cut.gguf", bytes.substr(0, needed))));
}

BOOST_AUTO_TEST_CASE(corruptions_are_named_errors) {
  TempDir dir;
  const std::string good = small_bytes();
  auto expect = [&](std::string bytes, std::initializer_list<std::string> words) {
    const auto p = dir.write("bad.gguf", bytes);
    BOOST_TEST(throws_with<FormatError>([&] { io::GgufFile f(p); }, words));
  };
  std::string b = good;
  b[0] = 'X';
  expect(b, {"bad.gguf", "bad magic"});
  b = good;
  b[4] = 9;
  expect(b, {"version 9"});
  io::GgufFile f(small());
  // Locate the last tensor info's offset field (8 bytes before the first padding) via its name.
  const std::string name = "w.q5_0";
  const auto pos = good.rfind(name);
  BOOST_REQUIRE(pos != std::string::npos);
  // name | u32 n_dims (2) | u64 ne[0] | u64 ne[1] | u32 type | u64 offset
  const std::size_t type_at = pos + name.size() + 4 + 16;
  b = good;
  const std::uint32_t bad_type = 77;
  std::memcpy(b.data() + type_at, &bad_type, 4);
  expect(b, {"w.q5_0", "unknown ggml type 77"});
  b = good;
  const std::uint64_t far = 1ull << 20;
  std::memcpy(b.data() + type_at + 4, &far, 8);
  expect(b, {"w.q5_0", "runs past the end"});
  b = good;
  const std::uint64_t odd = 3;
  std::memcpy(b.data() + type_at + 4, &odd, 8);
  expect(b, {"not aligned"});
  b = good;
  const std::uint64_t zero = 0;  // overlaps the first tensor
  std::memcpy(b.data() + type_at + 4, &zero, 8);
  expect(b, {"overlaps"});
  b = good;
  const std::uint64_t many = 1ull << 62;
  std::memcpy(b.data() + 8, &many, 8);
  expect(b, {"exceed the file"});
}

// Long arrays (a tokenizer's 262 144 pieces) are validated at parse time but decoded only when
// asked for; the typed accessors read them straight from the file.
BOOST_AUTO_TEST_CASE(long_arrays_decode_on_demand_and_through_typed_accessors) {
  TempDir dir;
  const std::uint64_t n = 5000;
  const auto p = dir.write(
      "arrays.gguf",
      gguf_with(
          {array_kv("tok", 8, n,
                    [](std::uint64_t i) {
                      char buf[32];
                      const int len = i % 7 == 0
                                          ? 0
                                          : std::snprintf(buf, sizeof buf, "p%llu",
                                                          static_cast<unsigned long long>(i));
                      std::string out = raw(std::uint64_t(len));
                      out.append(buf, static_cast<std::size_t>(len));
                      return out;
                    }),
           array_kv("score", 6, n, [](std::uint64_t i) { return raw(float(i) * 0.5f); }),
           array_kv("type", 5, n, [](std::uint64_t i) { return raw(std::int32_t(i % 6) - 1); }),
           array_kv("short", 4, 3, [](std::uint64_t i) { return raw(std::uint32_t(i + 10)); })}));
  io::GgufFile f(p);
  const auto tok = f.string_array("tok");
  BOOST_REQUIRE(tok.size() == n);
  BOOST_TEST(tok[0] == "");
  BOOST_TEST(tok[4999] == "p4999");
  const auto score = f.float_array("score");
  BOOST_TEST(score[4999] == 2499.5f);
  const auto type = f.int_array("type");
  BOOST_TEST(type[0] == -1);
  BOOST_TEST(type[4] == 3);
  BOOST_TEST(f.float_array("type")[5] == 4.0f);
  BOOST_TEST(f.int_array("short")[2] == 12);
  // The GgufValue view of the same arrays (decoded on first access).
  const auto& arr = f.get("tok").as_array("tok");
  BOOST_TEST(arr.size() == n);
  BOOST_TEST(arr[1234].as_string("") == "p1234");
  BOOST_TEST(f.get("score").as_array("score")[3].as_double("") == 1.5);
  BOOST_TEST(f.metadata().at("type").as_array("type")[4].as_int("") == 3);
  BOOST_TEST(throws_with<FormatError>([&] { f.string_array("score"); }, {"score", "strings"}));
  BOOST_TEST(throws_with<FormatError>([&] { f.int_array("score"); }, {"score", "integers"}));
  BOOST_TEST(throws_with<FormatError>([&] { f.float_array("tok"); }, {"tok", "numbers"}));
  BOOST_TEST(throws_with<FormatError>([&] { f.float_array("absent"); }, {"absent", "missing"}));
  const std::string twice =
      gguf_with({array_kv("k", 4, 1, [](std::uint64_t) { return raw(std::uint32_t(1)); }),
                 array_kv("k", 4, 1, [](std::uint64_t) { return raw(std::uint32_t(2)); })});
  BOOST_TEST(throws_with<FormatError>([&] { io::GgufFile g(dir.write("twice.gguf", twice)); },
                                      {"twice.gguf", "duplicate metadata key 'k'"}));
  // A string inside a long array that runs past the end is caught at parse time.
  std::string cut = gguf_with({array_kv(
      "tok", 8, n, [](std::uint64_t) { return raw(std::uint64_t(2)) + std::string("ab"); })});
  cut.resize(cut.size() - 64);
  BOOST_TEST(throws_with<FormatError>([&] { io::GgufFile g(dir.write("cut.gguf", cut)); },
                                      {"cut.gguf", "string"}));
}

BOOST_AUTO_TEST_SUITE_END()
