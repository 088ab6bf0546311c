#include "knprobe/io/safetensors.hpp"

#include <boost/test/unit_test.hpp>
#include <cstring>

#include "support/paths.hpp"

using namespace knprobe;
using knprobe::testing::TempDir;
using knprobe::testing::throws_with;

namespace {

/// Serialises a safetensors file: header JSON (as given) padded to 8 bytes, then `data`.
std::string safetensors_bytes(const nlohmann::json& header, const std::string& data) {
  std::string h = header.dump();
  while ((h.size() + 8) % 8 != 0) h.push_back(' ');
  std::string out(8, '\0');
  const std::uint64_t n = h.size();
  std::memcpy(out.data(), &n, 8);
  return out + h + data;
}

template <class T>
std::string raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

nlohmann::json entry(const char* dtype, std::vector<int> shape, std::size_t b, std::size_t e) {
  return {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {b, e}}};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(io_safetensors)

BOOST_AUTO_TEST_CASE(reads_f32_f16_bf16) {
  TempDir dir;
  const std::vector<float> a{1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, 7.0f};
  const std::vector<std::uint16_t> h{0x3C00, 0xC000, 0x0001};  // 1, -2, smallest subnormal
  const std::vector<std::uint16_t> b{0x3F80, 0xC020};          // 1, -2.5
  const std::string data = raw(a) + raw(h) + raw(b);
  const nlohmann::json header{{"a", entry("F32", {2, 3}, 0, 24)},
                              {"h", entry("F16", {3}, 24, 30)},
                              {"b", entry("BF16", {2}, 30, 34)},
                              {"__metadata__", {{"format", "pt"}}}};
  const auto path = dir.write("m.safetensors", safetensors_bytes(header, data));
  io::SafetensorsFile f(path);
  BOOST_TEST(f.names().size() == 3u);
  BOOST_TEST(f.metadata()["format"] == "pt");
  const auto view = f.f32_view("a");
  BOOST_TEST(std::vector<float>(view.begin(), view.end()) == a, boost::test_tools::per_element());
  BOOST_TEST((f.info("a").shape == std::vector<std::int64_t>{2, 3}));
  const auto hv = f.to_float("h");
  BOOST_TEST(hv[0] == 1.0f);
  BOOST_TEST(hv[1] == -2.0f);
  BOOST_TEST(hv[2] == std::ldexp(1.0f, -24));
  const auto bv = f.to_float("b");
  BOOST_TEST(bv[1] == -2.5f);
  BOOST_CHECK_THROW(f.f32_view("h"), FormatError);
  BOOST_TEST(throws_with<FormatError>([&] { f.info("nope"); }, {"m.safetensors", "nope"}));
}

BOOST_AUTO_TEST_CASE(sharded_checkpoint_through_index) {
  TempDir dir;
  const std::vector<float> a{1, 2}, b{3, 4, 5};
  dir.write("model-00001-of-00002.safetensors",
            safetensors_bytes({{"x.weight", entry("F32", {2}, 0, 8)}}, raw(a)));
  dir.write("model-00002-of-00002.safetensors",
            safetensors_bytes({{"y.weight", entry("F32", {3}, 0, 12)}}, raw(b)));
  const nlohmann::json index{{"metadata", {{"total_size", 20}}},
                             {"weight_map",
                              {{"x.weight", "model-00001-of-00002.safetensors"},
                               {"y.weight", "model-00002-of-00002.safetensors"}}}};
  dir.write("model.safetensors.index.json", index.dump());
  io::SafetensorsCheckpoint ck(dir.path());
  BOOST_TEST(ck.names().size() == 2u);
  BOOST_TEST(ck.to_float("y.weight")[2] == 5.0f);
  BOOST_TEST(ck.contains("x.weight"));
  BOOST_TEST(throws_with<FormatError>([&] { ck.info("z"); }, {"no tensor 'z'"}));

  dir.write("model.safetensors.index.json",
            nlohmann::json{{"weight_map", {{"x.weight", "../evil.safetensors"}}}}.dump());
  BOOST_TEST(throws_with<FormatError>([&] { io::SafetensorsCheckpoint c(dir.path()); },
                                      {"leaves the directory"}));
}

BOOST_AUTO_TEST_CASE(corrupt_files_are_named_errors) {
  TempDir dir;
  const std::string data(16, '\0');
  auto expect = [&](const std::string& bytes, std::initializer_list<std::string> words) {
    const auto p = dir.write("bad.safetensors", bytes);
    BOOST_TEST(throws_with<FormatError>([&] { io::SafetensorsFile f(p); }, words));
  };
  expect("abc", {"bad.safetensors", "truncated"});
  std::string huge(8, '\0');
  const std::uint64_t n = 1ull << 40;
  std::memcpy(huge.data(), &n, 8);
  expect(huge + "{}", {"header length", "past the end"});
  std::string bad_json(8, '\0');
  const std::uint64_t four = 4;
  std::memcpy(bad_json.data(), &four, 8);
  expect(bad_json + "{{{{", {"not a JSON object"});
  expect(safetensors_bytes({{"t", entry("F8", {4}, 0, 4)}}, data), {"unknown dtype 'F8'"});
  expect(safetensors_bytes({{"t", entry("F32", {4}, 0, 64)}}, data), {"'t'", "outside"});
  expect(safetensors_bytes({{"t", entry("F32", {4}, 8, 4)}}, data), {"outside"});
  expect(safetensors_bytes({{"t", entry("F32", {3}, 0, 16)}}, data), {"do not match"});
  expect(safetensors_bytes({{"t", entry("F32", {2}, 0, 8)}, {"u", entry("F32", {2}, 4, 12)}}, data),
         {"overlap"});
  expect(safetensors_bytes({{"t", {{"dtype", "F32"}}}}, data), {"needs dtype, shape"});
  expect(safetensors_bytes({{"t", entry("F32", {-1}, 0, 4)}}, data), {"non-negative"});
  BOOST_TEST(throws_with<FormatError>(
      [&] { io::SafetensorsFile f(dir.path() / "missing.safetensors"); }, {"cannot open"}));
}

BOOST_AUTO_TEST_CASE(tensors_cover_the_data_exactly_and_are_finite) {
  TempDir dir;
  const std::vector<float> v{1.0f, 2.0f};
  const std::string good = safetensors_bytes({{"t", entry("F32", {2}, 0, 8)}}, raw(v));
  BOOST_CHECK_NO_THROW(io::SafetensorsFile(dir.write("ok.safetensors", good)));
  // The header length off by one either way (the trailing pad absorbs it): every tensor would
  // shift by a byte. Refused, naming the unclaimed bytes.
  for (const std::int64_t delta : {-1, +1}) {
    std::string b = good;
    std::uint64_t n = 0;
    std::memcpy(&n, b.data(), 8);
    n = static_cast<std::uint64_t>(static_cast<std::int64_t>(n) + delta);
    std::memcpy(b.data(), &n, 8);
    const auto p = dir.write("shifted.safetensors", b);
    // −1: the header parses (padding) and a data byte is left over; +1: a data byte joins the
    // header and the last tensor runs past the data.
    BOOST_TEST(throws_with<FormatError>(
                   [&] { io::SafetensorsFile f(p); },
                   {"shifted.safetensors", delta < 0 ? "belong to no tensor" : "outside the data"}),
               "delta " << delta);
  }
  BOOST_TEST(throws_with<FormatError>(
      [&] { io::SafetensorsFile f(dir.write("tail.safetensors", good + "xxxx")); },
      {"after the last tensor"}));
  BOOST_TEST(throws_with<FormatError>(
      [&] {
        io::SafetensorsFile f(dir.write(
            "hole.safetensors", safetensors_bytes({{"t", entry("F32", {1}, 4, 8)}}, raw(v))));
      },
      {"[0, 4)", "belong to no tensor"}));
  const std::vector<float> bad{1.0f, std::nanf("")};
  const io::SafetensorsFile nan_file(
      dir.write("nan.safetensors", safetensors_bytes({{"w", entry("F32", {2}, 0, 8)}}, raw(bad))));
  BOOST_TEST(throws_with<NumericError>([&] { (void)nan_file.to_float("w"); },
                                       {"nan.safetensors", "'w'", "element 1 is NaN"}));
}

BOOST_AUTO_TEST_SUITE_END()
