// Errors. Every failure in ctsr is a ctsr::Error whose message names where it happened, the
// offending value and what was expected. CTSR_CHECK builds that message from stream-able parts.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace ctsr {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream s;
  (s << ... << parts);
  return s.str();
}
[[noreturn]] void throw_error(const char* file, int line, const std::string& message);
}  // namespace detail

}  // namespace ctsr

// Throws ctsr::Error("<message> (file:line)") unless cond holds.
#define CTSR_CHECK(cond, ...)                                                        \
  do {                                                                               \
    if (!(cond)) ::ctsr::detail::throw_error(__FILE__, __LINE__, ::ctsr::detail::concat(__VA_ARGS__)); \
  } while (0)

#define CTSR_FAIL(...) ::ctsr::detail::throw_error(__FILE__, __LINE__, ::ctsr::detail::concat(__VA_ARGS__))
