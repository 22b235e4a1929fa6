// Status and Result<T>: how every function that can fail on input reports it.
// Messages name the file, key, request or rank and what was expected; callers add context
// with Status::with_context() as the error travels up.
#pragma once

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace sw {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,    // bad config, bad request, bad shapes
  kNotFound,           // missing file, key or tensor
  kDataLoss,           // malformed file contents
  kOutOfRange,         // index or slice outside bounds
  kResourceExhausted,  // out of KV blocks, memory budget exceeded
  kDeadlineExceeded,   // a wait that timed out
  kUnavailable,        // peer lost, transport down
  kUnimplemented,      // op not supported by this backend
  kInternal,
};

const char* status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok_status() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string to_string() const;
  // Prefixes the message with where the error was met: "loading model dir/x: <message>".
  Status with_context(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

template <typename... Args>
Status make_error(StatusCode code, fmt::format_string<Args...> f, Args&&... args) {
  return Status(code, fmt::format(f, std::forward<Args>(args)...));
}
#define SW_ERROR_FN(Name, Code)                                                   \
  template <typename... Args>                                                     \
  Status Name(fmt::format_string<Args...> f, Args&&... args) {                    \
    return Status(StatusCode::Code, fmt::format(f, std::forward<Args>(args)...)); \
  }
SW_ERROR_FN(invalid_argument, kInvalidArgument)
SW_ERROR_FN(not_found, kNotFound)
SW_ERROR_FN(data_loss, kDataLoss)
SW_ERROR_FN(out_of_range, kOutOfRange)
SW_ERROR_FN(resource_exhausted, kResourceExhausted)
SW_ERROR_FN(deadline_exceeded, kDeadlineExceeded)
SW_ERROR_FN(unavailable, kUnavailable)
SW_ERROR_FN(unimplemented, kUnimplemented)
SW_ERROR_FN(internal_error, kInternal)
#undef SW_ERROR_FN

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    if (std::get<Status>(v_).ok())
      v_ = Status(StatusCode::kInternal, "Result built from OK status");
  }
  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

// Programming errors (broken invariants), not input errors: abort with file and line.
[[noreturn]] void check_failed(const char* file, int line, const char* expr,
                               const std::string& msg);

}  // namespace sw

#define SW_CONCAT_INNER(a, b) a##b
#define SW_CONCAT(a, b) SW_CONCAT_INNER(a, b)

#define SW_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::sw::Status sw_status_ = (expr);        \
    if (!sw_status_.ok()) return sw_status_; \
  } while (0)

#define SW_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()

#define SW_ASSIGN_OR_RETURN(lhs, expr) \
  SW_ASSIGN_OR_RETURN_IMPL(SW_CONCAT(sw_result_, __LINE__), lhs, expr)

#define SW_CHECK(cond)                                              \
  do {                                                              \
    if (!(cond)) ::sw::check_failed(__FILE__, __LINE__, #cond, ""); \
  } while (0)

#define SW_CHECK_MSG(cond, ...)                                                           \
  do {                                                                                    \
    if (!(cond)) ::sw::check_failed(__FILE__, __LINE__, #cond, fmt::format(__VA_ARGS__)); \
  } while (0)
