// Results files of resumable runs: a new file gets its header, a reopened one resumes, a header of
// another run is refused naming the difference, an interrupted last line is cut off and a damaged
// middle line is an error naming the line.
#include "knprobe/io/results_file.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>

#include "support/paths.hpp"

using namespace knprobe;
using nlohmann::json;

namespace {

json header(int steps) {
  return {{"format", "test/1"},
          {"options", {{"steps", steps}, {"langs", {"en", "zh"}}}},
          {"paths", {{"model", "/a/b"}}}};
}

std::string text_of(const std::filesystem::path& p) {
  const auto b = testing::read_bytes(p);
  return {b.begin(), b.end()};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(io_results_file)

BOOST_AUTO_TEST_CASE(new_file_gets_the_header_and_reopening_resumes) {
  testing::TempDir d;
  const auto p = d.path() / "r.jsonl";
  {
    io::ResultsFile f(p, header(20));
    BOOST_TEST(f.records().empty());
    BOOST_TEST(!f.repaired());
    f.append({{"record", "result"}, {"index", 0}});
    f.append({{"record", "result"}, {"index", 1}});
  }
  auto hh = header(20);
  hh["record"] = "header";
  BOOST_TEST(text_of(p) ==
             io::header_line(hh) +
                 "\n{\"index\":0,\"record\":\"result\"}\n{\"index\":1,\"record\":\"result\"}\n");
  auto h = header(20);
  h["paths"]["model"] = "/moved/elsewhere";  // a volatile key may differ
  io::ResultsFile g(p, h, {"paths"});
  BOOST_REQUIRE(g.records().size() == 2u);
  BOOST_TEST(g.records()[1]["index"] == 1);
  BOOST_TEST(g.header()["paths"]["model"] == "/a/b");  // the file's header is kept
  g.append({{"record", "result"}, {"index", 2}});
  BOOST_TEST(io::read_results(p).records.size() == 3u);
}

BOOST_AUTO_TEST_CASE(another_run_is_refused_naming_the_difference) {
  testing::TempDir d;
  const auto p = d.path() / "r.jsonl";
  { io::ResultsFile f(p, header(20)); }
  try {
    io::ResultsFile g(p, header(10));
    BOOST_FAIL("a header with other options was accepted");
  } catch (const ResumeError& e) {
    BOOST_TEST(std::string(e.what()).find("options.steps: file has 20, this run has 10") !=
               std::string::npos);
    BOOST_TEST(std::string(e.what()).find(p.string()) != std::string::npos);
  }
  auto h = header(20);
  h["paths"]["model"] = "/c";  // not volatile here: refused
  BOOST_CHECK_THROW(io::ResultsFile(p, h), ResumeError);
  auto extra = header(20);
  extra["model_hash"] = "x";
  BOOST_CHECK_THROW(io::ResultsFile(p, extra), ResumeError);
}

BOOST_AUTO_TEST_CASE(an_interrupted_last_line_is_cut_and_redone) {
  testing::TempDir d;
  const auto p = d.path() / "r.jsonl";
  {
    io::ResultsFile f(p, header(20));
    f.append({{"record", "result"}, {"index", 0}});
  }
  const auto good = text_of(p);
  for (const std::string tail : {"{\"record\":\"res", "{\"record\":\"result\"}", "not json\n"}) {
    d.write("r.jsonl", good + tail);
    io::ResultsFile f(p, header(20));
    BOOST_TEST(f.records().size() == 1u);
    BOOST_REQUIRE(f.repaired().has_value());
    BOOST_TEST(f.repaired()->find("line 3") != std::string::npos);
    BOOST_TEST(text_of(p) == good);  // cut back to the last good line
    f.append({{"record", "result"}, {"index", 1}});
    BOOST_TEST(io::read_results(p).records.size() == 2u);
  }
  // a header cut short: the file starts again
  d.write("h.jsonl", "{\"record\":\"header\",\"format\":\"te");
  io::ResultsFile h(d.path() / "h.jsonl", header(20));
  BOOST_TEST(h.records().empty());
  BOOST_TEST(io::read_results(d.path() / "h.jsonl").header["format"] == "test/1");
}

BOOST_AUTO_TEST_CASE(damage_before_the_last_line_is_an_error) {
  testing::TempDir d;
  auto h = header(20);
  h["record"] = "header";
  const auto p = d.write("r.jsonl", h.dump() + "\n{\"record\":\"result\"}\ngarbage\n{\"a\":1}\n");
  try {
    io::ResultsFile f(p, header(20));
    BOOST_FAIL("a damaged file was opened");
  } catch (const FormatError& e) {
    BOOST_TEST(std::string(e.what()).find("line 3 is not a JSON object") != std::string::npos);
  }
  const auto q = d.write("q.jsonl", "{\"record\":\"result\"}\n");
  BOOST_CHECK_THROW(io::read_results(q), FormatError);  // no header record
  BOOST_CHECK_THROW(io::read_results(d.path() / "missing.jsonl"), IoError);
  BOOST_CHECK_THROW(io::ResultsFile(d.path() / "x.jsonl", json::array()), ArgumentError);
}

BOOST_AUTO_TEST_CASE(a_second_writer_is_refused_while_the_file_is_open) {
  testing::TempDir d;
  const auto p = d.path() / "r.jsonl";
  {
    io::ResultsFile f(p, header(20));
    BOOST_TEST(f.locked());  // a local file system has flock
    f.append({{"record", "result"}, {"index", 0}});
    BOOST_TEST(testing::throws_with<IoError>([&] { io::ResultsFile g(p, header(20)); },
                                             {p.string(), "another process is writing"}));
    // Another process is refused too (flock locks belong to the open file, not the thread).
    const pid_t child = ::fork();
    BOOST_REQUIRE(child >= 0);
    if (child == 0) {
      int code = 1;
      try {
        io::ResultsFile g(p, header(20));
      } catch (const IoError&) {
        code = 42;
      } catch (...) {
        code = 2;
      }
      ::_exit(code);
    }
    int status = 0;
    BOOST_REQUIRE(::waitpid(child, &status, 0) == child);
    BOOST_TEST(WIFEXITED(status));
    BOOST_TEST(WEXITSTATUS(status) == 42);
    BOOST_TEST(io::read_results(p).records.size() == 1u);  // readers take no lock
  }
  // Closed, the lock is gone: the run resumes.
  io::ResultsFile again(p, header(20));
  BOOST_TEST(again.records().size() == 1u);
}

// `knprobe run` rewrites its output canonically (rename over the path) while its file is still
// open and locked: the lock stays with the replaced file, and the next writer opens, locks and
// reads the new one, never the old inode.
BOOST_AUTO_TEST_CASE(a_file_renamed_over_the_locked_one_is_the_one_opened_next) {
  testing::TempDir d;
  const auto p = d.path() / "r.jsonl";
  io::ResultsFile f(p, header(20));
  f.append({{"record", "result"}, {"index", 0}});
  auto h = header(20);
  h["record"] = "header";
  io::write_results_atomic(
      p, h, {{{"record", "result"}, {"index", 0}}, {{"record", "result"}, {"index", 1}}});
  io::ResultsFile g(p, header(20));
  BOOST_TEST(g.locked());
  BOOST_TEST(g.records().size() == 2u);
  g.append({{"record", "result"}, {"index", 2}});
  BOOST_TEST(io::read_results(p).records.size() == 3u);
}

BOOST_AUTO_TEST_CASE(atomic_rewrite_replaces_the_file) {
  testing::TempDir d;
  const auto p = d.path() / "r.jsonl";
  { io::ResultsFile f(p, header(20)); }
  io::write_results_atomic(p, {{"record", "header"}, {"v", 2}}, {{{"record", "x"}}});
  const auto c = io::read_results(p);
  BOOST_TEST(c.header["v"] == 2);
  BOOST_TEST(c.records.size() == 1u);
  BOOST_TEST(!std::filesystem::exists(p.string() + ".tmp"));
}

BOOST_AUTO_TEST_CASE(foreign_files_are_refused_and_left_unchanged) {
  testing::TempDir d;
  // A one-line file that is not ours must not be taken for a torn header and emptied.
  // Nor a one-line JSON file without its final newline (a fact file, a minified config).
  for (const std::string text :
       {"my notes\n", "my notes", "{\"record\":\"result\"}\n", "{\"id\":\"f1\",\"prompts\":{}}",
        "{\"record\":\"headerx\"}", "[[[[[[[["}) {
    const auto p = d.write("notes.txt", text);
    BOOST_CHECK_THROW(io::ResultsFile(p, header(20)), FormatError);
    BOOST_TEST(text_of(p) == text);
  }
  // A torn header line (a kill while the header was written) is still repaired.
  for (const std::string cut :
       {"{\"rec", "{\"record\":\"header\"", "{\"record\":\"header\",\"format\":\"te"}) {
    const auto torn = d.write("torn.jsonl", cut);
    { io::ResultsFile f(torn, header(20)); }
    BOOST_TEST(io::read_results(torn).header["format"] == "test/1");
    BOOST_TEST(text_of(torn).rfind(std::string(io::k_header_start), 0) == 0u);
  }
  // JSON nested a million deep is refused by name (copying or printing it would overflow the
  // stack).
  const auto deep = d.write("deep.jsonl", std::string(1000000, '[') + "\n");
  BOOST_CHECK_THROW(io::ResultsFile(deep, header(20)), FormatError);
  BOOST_CHECK_THROW(io::ResultsFile("/dev/full", header(20)), IoError);
  BOOST_CHECK_THROW(io::ResultsFile(d.path(), header(20)), IoError);
  // A line longer than any record is refused, not read into memory.
  auto h = header(20);
  h["record"] = "header";
  const auto big = d.write("big.jsonl", h.dump() + "\n\"" + std::string(17u << 20, 'x') + "\"\n");
  BOOST_TEST(testing::throws_with<FormatError>([&] { (void)io::read_results(big); },
                                               {"line 2", "more than a knprobe record"}));
  // A NaN is never written as null.
  io::ResultsFile f(d.path() / "n.jsonl", header(20));
  BOOST_CHECK_THROW(f.append({{"record", "result"}, {"p", std::nan("")}}), NumericError);
}

BOOST_AUTO_TEST_SUITE_END()
