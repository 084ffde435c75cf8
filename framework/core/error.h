#pragma once
// Errors: the library throws longnet::Error and never aborts or exits.
#include <sstream>
#include <stdexcept>
#include <string>

namespace longnet {

/// The one exception type of the framework. Messages start with the op name in brackets and show
/// the shapes involved: "[matmul] inner dims differ: (4, 8) @ (9, 2)".
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
/// Concatenates anything streamable into one string.
template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream s;
  (s << ... << args);
  return s.str();
}
}  // namespace detail

}  // namespace longnet

/// Throws longnet::Error with the concatenated message unless `cond` holds.
#define LN_CHECK(cond, ...)                                            \
  do {                                                                 \
    if (!(cond)) throw ::longnet::Error(::longnet::detail::concat(__VA_ARGS__)); \
  } while (0)

/// Throws longnet::Error with the concatenated message.
#define LN_FAIL(...) throw ::longnet::Error(::longnet::detail::concat(__VA_ARGS__))
