#pragma once
// Typed exceptions. Every error message names the argument, file, tensor or token that was wrong
// and what was expected.

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace knprobe {

/// Base of every exception knprobe throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A function argument is out of its documented domain (zero heads, m = 0, t outside (0, 1], ...).
class ArgumentError : public Error {
 public:
  using Error::Error;
};

/// Tensor shapes do not agree with each other or with a model's configuration.
class ShapeError : public Error {
 public:
  using Error::Error;
};

/// A file is missing, unreadable, truncated or malformed.
class FormatError : public Error {
 public:
  using Error::Error;
};

/// Text cannot be tokenized as asked (unknown token, missing special token, ...).
class TokenizerError : public Error {
 public:
  using Error::Error;
};

/// A command-line option is missing, malformed or outside its range (the CLI exits with 2).
class UsageError : public ArgumentError {
 public:
  using ArgumentError::ArgumentError;
};

/// A file or folder cannot be read or written (permissions, not a regular file, disk full, ...).
class IoError : public Error {
 public:
  using Error::Error;
};

/// A weight, activation, probability or score is NaN or infinite where a number is required.
class NumericError : public Error {
 public:
  using Error::Error;
};

/// Work was stopped on request (SIGINT / SIGTERM through a stop flag); nothing half-done is kept.
class Interrupted : public Error {
 public:
  using Error::Error;
};

/// A results file cannot be resumed by this run: it was written for another model, other
/// options, other facts or another library version (the message names the first difference).
class ResumeError : public Error {
 public:
  using Error::Error;
};

namespace detail {

template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

}  // namespace detail
}  // namespace knprobe

/// Throws `ErrorType(concat(message parts...))` when `cond` is false. For user input: never assert.
#define KNPROBE_REQUIRE(cond, ErrorType, ...)                             \
  do {                                                                    \
    if (!(cond)) throw ErrorType(::knprobe::detail::concat(__VA_ARGS__)); \
  } while (false)
