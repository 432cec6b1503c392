// Result<T>: a value or an Error, the host's way of reporting failure
// without exceptions across layers (LevelDB's Status, with a payload).
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace kiln {

// Stable error codes; the HTTP layer maps them to statuses in one place.
enum class ErrorCode {
  kInvalidArgument,
  kFailed,  // the work itself failed (agent error, rejected push)
  kNotFound,
  kConflict,
  kResourceExhausted,  // a limit was reached (HTTP 429)
  kUnavailable,
  kCancelled,
  kTimeout,
  kUnsupported,
  kPluginBug,
  kInternal,
};

const char* errorCodeName(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
  bool retryable = false;
  // For invalid input: each offending field and what to fix.
  std::vector<std::pair<std::string, std::string>> fields;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const {
    assert(!ok());
    return std::get<1>(v_);
  }

 private:
  std::variant<T, Error> v_;
};

// Result<void>.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const {
    assert(!ok_);
    return error_;
  }

 private:
  Error error_;
  bool ok_ = true;
};

inline Error makeError(ErrorCode code, std::string message, bool retryable = false) {
  return Error{code, std::move(message), retryable, {}};
}

}  // namespace kiln
