// One exception type for every recoverable failure in kinfer. The message
// always names what failed (file, tensor, field, value) so a user can act on it.
#pragma once
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace kf {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// Throws kf::Error with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace kf

// KF_CHECK(cond, "fmt {}", args...): throw kf::Error when cond is false.
#define KF_CHECK(cond, ...)            \
  do {                                 \
    if (!(cond)) ::kf::fail(__VA_ARGS__); \
  } while (0)
