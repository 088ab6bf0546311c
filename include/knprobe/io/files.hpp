#pragma once
// Reading and writing files of user input safely: a path that is not a regular file (a folder, a
// FIFO, a device such as /dev/full) is refused by name before anything blocks or reads without
// end; sizes are capped; every write is checked, and whole files are replaced atomically (temporary
// file in the same folder, fsync, rename, fsync of the folder). Output file names derived from
// user ids go through `safe_file_stem`, which cannot leave the output folder.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>

#include "knprobe/core/error.hpp"
#include "knprobe/core/rng.hpp"

namespace knprobe::io {

namespace detail {

inline std::string errno_text(int err) {
  return std::strerror(err);
}

/// "<path>: <what> <problem>", the shape of every message here.
inline std::string concat_io(const std::filesystem::path& path, std::string_view what,
                             const std::string& problem) {
  return path.string() + ": " + std::string(what) + " " + problem;
}

/// Closes an fd on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace detail

/// Throws IoError naming `what` and the path unless `path` is an existing regular file. Uses
/// stat(2), so a FIFO or device is refused without being opened (opening a FIFO would block).
inline void require_regular_file(const std::filesystem::path& path, std::string_view what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw IoError(path.string() + ": cannot open " + std::string(what) + " (" +
                  detail::errno_text(errno) + ")");
  if (!S_ISREG(st.st_mode))
    throw IoError(detail::concat_io(
        path, what,
        S_ISDIR(st.st_mode) ? "is a folder, expected a file" : "is not a regular file"));
}

/// The bytes of the regular file `path` (refused as in require_regular_file; FormatError when it
/// holds more than `max_bytes`).
inline std::string read_file(const std::filesystem::path& path, std::string_view what,
                             std::uintmax_t max_bytes = std::uintmax_t(1) << 30) {
  detail::Fd f{::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC)};
  if (f.fd < 0)
    throw IoError(path.string() + ": cannot open " + std::string(what) + " (" +
                  detail::errno_text(errno) + ")");
  struct stat st {};
  if (::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode))
    throw IoError(detail::concat_io(path, what, "is not a regular file"));
  if (static_cast<std::uintmax_t>(st.st_size) > max_bytes)
    throw FormatError(detail::concat_io(path, what,
                                        "is " + std::to_string(st.st_size) +
                                            " bytes, more than the " + std::to_string(max_bytes) +
                                            " accepted"));
  std::string out(static_cast<std::size_t>(st.st_size), '\0');
  std::size_t at = 0;
  while (at < out.size()) {
    const ssize_t n = ::read(f.fd, out.data() + at, out.size() - at);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      throw IoError(path.string() + ": cannot read " + std::string(what) + " (" +
                    detail::errno_text(errno) + ")");
    if (n == 0) break;  // the file shrank while being read
    at += static_cast<std::size_t>(n);
  }
  out.resize(at);
  return out;
}

/// Throws IoError unless `path` is missing or a regular file: an output about to be written or
/// replaced must not be a folder, FIFO or device.
inline void require_file_target(const std::filesystem::path& path, std::string_view what) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return;
    throw IoError(path.string() + ": cannot check " + std::string(what) + " (" +
                  detail::errno_text(errno) + ")");
  }
  if (S_ISLNK(st.st_mode)) {  // a link to a regular file is fine, to anything else not
    if (::stat(path.c_str(), &st) != 0) return;
  }
  if (!S_ISREG(st.st_mode))
    throw IoError(detail::concat_io(
        path, what,
        S_ISDIR(st.st_mode) ? "is a folder, expected a file" : "is not a regular file"));
}

/// Writes all of `bytes` to the open descriptor, retrying short writes; IoError on failure.
inline void write_all(int fd, std::string_view bytes, const std::filesystem::path& path) {
  std::size_t at = 0;
  while (at < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + at, bytes.size() - at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw IoError(path.string() + ": write failed (" + detail::errno_text(errno) + ")");
    at += static_cast<std::size_t>(n);
  }
}

/// fsync of the folder holding `path`, so that a rename into it survives a crash.
inline void sync_parent_folder(const std::filesystem::path& path) {
  const auto dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  detail::Fd d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (d.fd >= 0) ::fsync(d.fd);
}

/// Replaces `path` by `bytes` atomically: written to a temporary file beside it, fsynced, renamed
/// over it, and the folder fsynced. A reader sees the old or the new file, never a part. Throws
/// IoError naming the path when anything fails (the temporary file is removed).
inline void write_file_atomic(const std::filesystem::path& path, std::string_view bytes) {
  require_file_target(path, "output file");
  const std::filesystem::path tmp = path.string() + ".tmp-" + std::to_string(::getpid());
  detail::Fd f{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
  if (f.fd < 0) throw IoError(path.string() + ": cannot write (" + detail::errno_text(errno) + ")");
  try {
    write_all(f.fd, bytes, path);
    if (::fsync(f.fd) != 0)
      throw IoError(path.string() + ": fsync failed (" + detail::errno_text(errno) + ")");
    const int fd = f.fd;
    f.fd = -1;
    if (::close(fd) != 0)
      throw IoError(path.string() + ": close failed (" + detail::errno_text(errno) + ")");
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      throw IoError(path.string() + ": cannot replace (" + detail::errno_text(errno) + ")");
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  sync_parent_folder(path);
}

/// Creates the folder `dir` (and its parents) for outputs; IoError naming it when it cannot be
/// created or exists as something else than a folder.
inline void create_output_folder(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir))
    throw IoError(dir.string() + ": cannot create the output folder" +
                  (ec ? " (" + ec.message() + ")" : std::string(" (a file is in the way)")));
}

/// A file-name stem for an arbitrary id (a fact id from user input): the bytes [A-Za-z0-9._-] are
/// kept, every other byte becomes '_', leading dots are dropped and the result is cut to 64 bytes;
/// whenever anything was changed, "-<16 hex digits of FNV-1a(id)>" is appended so that distinct
/// ids keep distinct names. The result never contains '/', NUL or "..", so `dir / stem + ext`
/// stays inside `dir`.
/// Example: safe_file_stem("capital_france") == "capital_france";
///          safe_file_stem("../../x") == "x-<hash>" (the dots and slashes are gone).
inline std::string safe_file_stem(std::string_view id) {
  std::string s;
  bool changed = false;
  for (unsigned char c : id) {
    const bool ok = std::isalnum(c) || c == '.' || c == '_' || c == '-';
    if (ok && c < 128) {
      s.push_back(static_cast<char>(c));
    } else {
      s.push_back('_');
      changed = true;
    }
  }
  const auto first = s.find_first_not_of('.');
  if (first != 0) {
    s.erase(0, first == std::string::npos ? s.size() : first);
    changed = true;
  }
  if (s.size() > 64) {
    s.resize(64);
    changed = true;
  }
  if (changed || s.empty()) {
    char hex[20];
    std::snprintf(hex, sizeof hex, "%016llx",
                  static_cast<unsigned long long>(knprobe::detail::fnv1a(id)));
    s += (s.empty() ? "" : "-") + std::string(hex);
  }
  return s;
}

}  // namespace knprobe::io
