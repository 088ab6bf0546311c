#pragma once
// A results file that a long run appends to and a rerun resumes (JSON Lines, one record per
// line). The first line is a header record ({"record": "header", ...}: options, model hash,
// library version); every later line is one finished piece of work. Each record is written with a
// single write(2) and made durable with fdatasync before the next piece of work starts, so a run
// killed at any moment (SIGINT, SIGTERM, SIGKILL, power loss) leaves every finished record intact
// and at most one unterminated last line, which the next open cuts off.

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "knprobe/core/error.hpp"
#include "knprobe/io/files.hpp"
#include "knprobe/io/json_get.hpp"

namespace knprobe::io {

/// The lines of a results file: its header, its records, and what was wrong with its last line.
struct ResultsContent {
  nlohmann::json header;                ///< null when the file is empty
  std::vector<nlohmann::json> records;  ///< every record after the header, in file order
  std::optional<std::string> repaired;  ///< why the last line was dropped (interrupted write)
  std::size_t valid_bytes = 0;          ///< length of the file up to the last good line
};

namespace detail {

/// "key.sub: file has A, this run has B" for the first difference between two JSON values, or an
/// empty string when they are equal.
inline std::string first_difference(const nlohmann::json& file, const nlohmann::json& run,
                                    const std::string& where = "") {
  if (file == run) return {};
  if (file.is_object() && run.is_object()) {
    for (auto it = run.begin(); it != run.end(); ++it) {
      const std::string k = where.empty() ? it.key() : where + "." + it.key();
      if (!file.contains(it.key()))
        return k + ": missing in the file, this run has " + it.value().dump();
      if (auto d = first_difference(file[it.key()], it.value(), k); !d.empty()) return d;
    }
    for (auto it = file.begin(); it != file.end(); ++it)
      if (!run.contains(it.key()))
        return (where.empty() ? it.key() : where + "." + it.key()) + ": file has " +
               it.value().dump() + ", this run has none";
  }
  return (where.empty() ? "header" : where) + ": file has " + file.dump() + ", this run has " +
         run.dump();
}

}  // namespace detail

/// How every header line knprobe writes begins (the key written first, whatever the other keys):
/// the only first line that may be taken for a header cut short by a kill is a prefix of this or
/// an unterminated line that starts with it.
inline constexpr std::string_view k_header_start = R"({"record":"header")";

/// The header record `h` as one line of text (no newline) starting with k_header_start.
inline std::string header_line(nlohmann::json h) {
  h.erase("record");
  const std::string rest = h.dump();
  std::string out(k_header_start);
  if (rest.size() <= 2) {  // "{}"
    out += '}';
  } else {
    out += ',';
    out.append(rest, 1, std::string::npos);
  }
  return out;
}

/// Largest results file read (the records are held in memory; a run of 100,000 items is ~500 MB).
inline constexpr std::uintmax_t k_max_results_file = std::uintmax_t(2) << 30;

/// Longest line accepted in a results file (records are a few KiB; a longer line is not ours).
inline constexpr std::size_t k_max_results_line = std::size_t(16) << 20;

/// Reads a results file (a regular file: a FIFO or device is refused by name). Every line must be
/// a JSON object of at most 16 MiB; the first must be a header record (FormatError otherwise: a
/// file that does not start with a knprobe header is never taken for an interrupted one, so it is
/// never modified). An unparsable or unterminated *last* line after the header — a write cut short
/// by a kill — is left out and described in `repaired`; an unparsable line elsewhere is a
/// FormatError naming the file and the line number (the file was damaged, not interrupted).
inline ResultsContent read_results(const std::filesystem::path& path) {
  const std::string text = read_file(path, "results file", k_max_results_file);
  ResultsContent out;
  std::size_t pos = 0, line = 0;
  while (pos < text.size()) {
    ++line;
    const auto nl = text.find('\n', pos);
    const bool last = nl == std::string::npos || nl + 1 == text.size();
    const std::size_t len = (nl == std::string::npos ? text.size() : nl) - pos;
    KNPROBE_REQUIRE(len <= k_max_results_line, FormatError, path.string(), ": line ", line, " is ",
                    len, " bytes, more than a knprobe record can be");
    const std::string_view s(text.data() + pos, len);
    auto j = json_depth_ok(s) ? nlohmann::json::parse(s, nullptr, false)
                              : nlohmann::json(nlohmann::json::value_t::discarded);
    const bool ok = nl != std::string::npos && j.is_object();
    if (!ok) {
      // A torn first line is only ever the start of a header line as header_line() writes it.
      const auto n0 = k_header_start.size();
      const bool torn_header =
          nl == std::string::npos &&
          (k_header_start.starts_with(s) || (s.starts_with(k_header_start) && s[n0] == ','));
      KNPROBE_REQUIRE(line > 1 || torn_header, FormatError, path.string(),
                      ": does not start with a knprobe header line; not a results file of "
                      "knprobe run (left unchanged)");
      const std::string why =
          nl == std::string::npos
              ? "line " + std::to_string(line) + " is unterminated (an interrupted write)"
              : "line " + std::to_string(line) + " is not a JSON object";
      KNPROBE_REQUIRE(last, FormatError, path.string(), ": ", why,
                      "; the file is damaged before its last line");
      out.repaired = why + "; it was dropped and its work is redone";
      break;
    }
    if (line == 1) {
      KNPROBE_REQUIRE(j.value("record", nlohmann::json()) == "header", FormatError, path.string(),
                      ": the first line is not a knprobe header record (left unchanged)");
      out.header = std::move(j);
    } else {
      out.records.push_back(std::move(j));
    }
    pos = nl + 1;
    out.valid_bytes = pos;
  }
  return out;
}

/// Writes header + records to `path` atomically: a temporary file in the same folder, fsync'd,
/// then renamed over `path` (a crash leaves either the old or the new file, never a mix).
inline void write_results_atomic(const std::filesystem::path& path, const nlohmann::json& header,
                                 const std::vector<nlohmann::json>& records) {
  std::string text = header_line(header) + '\n';
  for (const auto& r : records) text += r.dump() + '\n';
  write_file_atomic(path, text);
}

/// A results file open for appending, resumed when it already holds records of the same run.
/// While it is open, the process holds an exclusive lock on it (flock(2), advisory): a second
/// writer — a second `knprobe run` started on the same output — is refused with an IoError instead
/// of interleaving its records with ours (readers, such as `knprobe report`, take no lock). Where
/// the file system has no flock the file is opened unlocked and `locked()` says so.
class ResultsFile {
 public:
  /// Opens (creating if needed) `path` and locks it. A new or empty file gets `header` (which must
  /// be a JSON object; "record": "header" is added) as its first line. An existing file must start
  /// with a header equal to this one except for `volatile_keys` (say, a start time): otherwise
  /// ResumeError names the first difference — results of another model, other options or another
  /// version are never mixed. An interrupted last line is cut off the file (see `repaired`).
  /// IoError when another process holds the file open for writing.
  ResultsFile(std::filesystem::path path, nlohmann::json header,
              const std::vector<std::string>& volatile_keys = {})
      : path_(std::move(path)) {
    KNPROBE_REQUIRE(header.is_object(), ArgumentError, "results header must be a JSON object");
    header["record"] = "header";
    require_file_target(path_, "results file");  // not a folder, FIFO or device
    struct stat st = open_locked();
    if (st.st_size > 0) {
      auto c = read_results(path_);
      if (!c.header.is_null()) {
        nlohmann::json a = c.header, b = header;
        for (const auto& k : volatile_keys) {
          a.erase(k);
          b.erase(k);
        }
        const auto d = detail::first_difference(a, b);
        KNPROBE_REQUIRE(d.empty(), ResumeError, path_.string(),
                        ": cannot resume, it holds results of another run (", d,
                        "); choose another output or delete the file");
        header_ = std::move(c.header);
      }
      records_ = std::move(c.records);
      repaired_ = std::move(c.repaired);
      if (repaired_) {
        KNPROBE_REQUIRE(::ftruncate(fd_.fd, static_cast<off_t>(c.valid_bytes)) == 0, IoError,
                        path_.string(), ": cannot cut off the torn last line (",
                        std::strerror(errno), ")");
      }
    }
    if (header_.is_null()) {
      header_ = std::move(header);
      write_line(header_);
    }
  }
  ResultsFile(const ResultsFile&) = delete;
  ResultsFile& operator=(const ResultsFile&) = delete;
  ~ResultsFile() = default;  // closing the descriptor releases the lock

  const std::filesystem::path& path() const { return path_; }
  const nlohmann::json& header() const { return header_; }
  /// The records already in the file when it was opened, then every appended one.
  const std::vector<nlohmann::json>& records() const { return records_; }
  /// Why the file's last line was dropped on opening, if it was.
  const std::optional<std::string>& repaired() const { return repaired_; }
  /// False when the file system offers no flock(2) (ENOSYS, ENOLCK, EOPNOTSUPP: some NFS, CIFS
  /// and Lustre mounts): the file was opened without the lock, and a second writer is not
  /// detected. On NFS mounted with local_lock=flock the lock holds within one machine only.
  bool locked() const { return locked_; }

  /// Appends `record` (a JSON object) as one line — a single write(2) — and makes it durable
  /// (fdatasync) before returning.
  void append(nlohmann::json record) {
    KNPROBE_REQUIRE(record.is_object(), ArgumentError, "a results record must be a JSON object");
    require_finite_json(record, path_.string() + ": record");
    write_line(record);
    records_.push_back(std::move(record));
  }

 private:
  /// Opens the file for appending and takes the lock; returns its stat after the lock, when it is
  /// known to be the file at `path_` (a file renamed over the path between open and lock — the
  /// canonical rewrite of a run that has just finished — is reopened).
  struct stat open_locked() {
    for (int attempt = 0; attempt < 3; ++attempt) {
      // O_NONBLOCK: should a FIFO replace the file since the check, opening it does not block.
      if (fd_.fd >= 0) ::close(fd_.fd);  // a replaced file of the previous attempt
      fd_.fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK, 0644);
      const int open_errno = errno;
      KNPROBE_REQUIRE(fd_.fd >= 0, IoError, path_.string(), ": cannot open for writing (",
                      std::strerror(open_errno), ")");
      struct stat st {};
      KNPROBE_REQUIRE(::fstat(fd_.fd, &st) == 0 && S_ISREG(st.st_mode), IoError, path_.string(),
                      ": results file is not a regular file");
      int rc = -1, e = 0;
      do {
        rc = ::flock(fd_.fd, LOCK_EX | LOCK_NB);
        e = rc == 0 ? 0 : errno;
      } while (rc != 0 && e == EINTR);
      locked_ = rc == 0;
      if (!locked_) {
        KNPROBE_REQUIRE(e != EWOULDBLOCK, IoError, path_.string(),
                        ": another process is writing this results file (a second knprobe run "
                        "or localize on the same output?); wait for it to finish or choose "
                        "another output");
        KNPROBE_REQUIRE(e == ENOSYS || e == ENOLCK || e == EOPNOTSUPP, IoError, path_.string(),
                        ": cannot lock the results file (", std::strerror(e), ")");
      }
      struct stat now {};
      const int fstat_rc = ::fstat(fd_.fd, &st);
      const int fstat_errno = errno;
      KNPROBE_REQUIRE(fstat_rc == 0, IoError, path_.string(), ": cannot stat the results file (",
                      std::strerror(fstat_errno), ")");
      if (::stat(path_.c_str(), &now) == 0 && now.st_dev == st.st_dev && now.st_ino == st.st_ino)
        return st;
    }
    throw IoError(path_.string() +
                  ": the file was replaced three times while it was being opened; is another "
                  "process rewriting it?");
  }

  void write_line(const nlohmann::json& j) {
    const std::string s =
        (j.value("record", nlohmann::json()) == "header" ? header_line(j) : j.dump()) + "\n";
    std::size_t done = 0;
    while (done < s.size()) {
      const auto n = ::write(fd_.fd, s.data() + done, s.size() - done);
      if (n < 0 && errno == EINTR) continue;
      KNPROBE_REQUIRE(n > 0, IoError, path_.string(), ": write failed (", std::strerror(errno),
                      ")");
      done += static_cast<std::size_t>(n);
    }
    KNPROBE_REQUIRE(::fdatasync(fd_.fd) == 0, IoError, path_.string(), ": fdatasync failed (",
                    std::strerror(errno), ")");
  }

  std::filesystem::path path_;
  nlohmann::json header_;
  std::vector<nlohmann::json> records_;
  std::optional<std::string> repaired_;
  io::detail::Fd fd_;  // open, locked, for the object's lifetime
  bool locked_ = false;
};

}  // namespace knprobe::io
