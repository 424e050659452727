// The project's one error type, sg::Error, and the SG_CHECK macro.
//
// Host code reports every problem by throwing sg::Error with a message that
// says what was wrong and what to do; nothing calls exit() or abort(). It sits
// in kernels/ (the bottom layer) only so that CUDA_CHECK and CUBLAS_CHECK in
// kernels/cuda can throw it too; every layer above includes it from here.
//
//   SG_CHECK(a.dim() == 2, "matmul: expected a matrix, got ", a);
//
// Read next: kernels/dtype.h.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace sg {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
template <typename... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream stream;
  (stream << ... << parts);
  return stream.str();
}
}  // namespace detail

}  // namespace sg

// Throws sg::Error built from the streamed parts when `condition` is false.
// The parts are only formatted on failure, so a check costs one branch.
#define SG_CHECK(condition, ...)                                  \
  do {                                                            \
    if (!(condition)) throw ::sg::Error(::sg::detail::concat(__VA_ARGS__)); \
  } while (0)

#define SG_FAIL(...) throw ::sg::Error(::sg::detail::concat(__VA_ARGS__))
