// io/files.hpp: paths that are not regular files are refused by name without blocking (a FIFO),
// sizes are capped, writes are atomic and checked, and file names made from ids cannot escape.
#include "knprobe/io/files.hpp"

#include <sys/stat.h>

#include <boost/test/unit_test.hpp>
#include <chrono>
#include <set>

#include "support/paths.hpp"

using namespace knprobe;
using knprobe::testing::TempDir;
using knprobe::testing::throws_with;

BOOST_AUTO_TEST_SUITE(io_files)

BOOST_AUTO_TEST_CASE(fifo_folder_and_device_are_refused_without_blocking) {
  TempDir dir;
  const auto fifo = dir.path() / "model.gguf";
  BOOST_TEST_REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const auto t0 = std::chrono::steady_clock::now();
  BOOST_TEST(throws_with<IoError>([&] { io::require_regular_file(fifo, "model file"); },
                                  {"model.gguf", "not a regular file"}));
  BOOST_TEST(throws_with<IoError>([&] { (void)io::read_file(fifo, "fact file"); },
                                  {"model.gguf", "not a regular file"}));
  BOOST_TEST(throws_with<IoError>([&] { (void)io::read_file(dir.path(), "fact file"); },
                                  {"is not a regular file"}));
  BOOST_TEST(throws_with<IoError>([&] { io::require_file_target("/dev/full", "results file"); },
                                  {"/dev/full", "not a regular file"}));
  BOOST_TEST(throws_with<IoError>([&] { io::require_file_target(dir.path(), "report"); },
                                  {"is a folder"}));
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5)));
  BOOST_TEST(throws_with<IoError>([&] { (void)io::read_file(dir.path() / "nope", "fact file"); },
                                  {"nope", "cannot open fact file"}));
}

BOOST_AUTO_TEST_CASE(size_cap_and_atomic_writes) {
  TempDir dir;
  const auto p = dir.write("a.txt", std::string(100, 'x'));
  BOOST_TEST(io::read_file(p, "text", 100).size() == 100u);
  BOOST_TEST(throws_with<FormatError>([&] { (void)io::read_file(p, "text", 99); },
                                      {"a.txt", "100 bytes", "99"}));
  io::write_file_atomic(p, "new");
  BOOST_TEST(io::read_file(p, "text") == "new");
  std::size_t entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path())) ++entries;
  BOOST_TEST(entries == 1u);  // no temporary file left behind
  BOOST_TEST(throws_with<IoError>([&] { io::write_file_atomic("/proc/knprobe-r.html", "x"); },
                                  {"/proc/knprobe-r.html"}));
  BOOST_TEST(
      throws_with<IoError>([&] { io::write_file_atomic(dir.path(), "x"); }, {"is a folder"}));
  BOOST_TEST(throws_with<IoError>([&] { io::create_output_folder(p / "sub"); }, {"a.txt"}));
}

BOOST_AUTO_TEST_CASE(file_stems_stay_inside_and_stay_distinct) {
  BOOST_TEST(io::safe_file_stem("capital_france") == "capital_france");
  BOOST_TEST(io::safe_file_stem("P36:12") != "P36_12");  // changed, so it carries a hash
  std::set<std::string> stems;
  const std::vector<std::string> ids{
      "../../x", "/tmp/x", "a/b",  std::string("a\0b", 3), std::string(5000, 'y'), "..", ".",
      "x",       "a_b",    "a/b/", "\xe6\xb3\x95"};
  for (const auto& id : ids) {
    const auto s = io::safe_file_stem(id);
    BOOST_TEST(!s.empty());
    BOOST_TEST(s.find('/') == std::string::npos, s);
    BOOST_TEST(s.find('\0') == std::string::npos);
    BOOST_TEST(s.rfind(".", 0) != 0u, s);
    BOOST_TEST(s.size() <= 96u);
    BOOST_TEST(stems.insert(s).second, "two ids share the stem " << s);
    const auto p = std::filesystem::path("/out") / (s + ".en.npy");
    BOOST_TEST(p.lexically_normal().parent_path() == std::filesystem::path("/out"));
  }
}

BOOST_AUTO_TEST_SUITE_END()
