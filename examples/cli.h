// The small command lines of gpt_eval and gpt_sample: "--name value" pairs
// over a table of defaults, --help, and main()'s error handling (an error is
// one line on stderr and exit status 1, never a crash).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "kernels/error.h"

namespace sg {

// The flags given, over `defaults` (which also lists the known ones);
// nullopt after printing `usage` for --help.
inline std::optional<std::map<std::string, std::string>> parse_args(int argc, char** argv,
                                                                    std::map<std::string, std::string> defaults,
                                                                    const char* usage) {
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::printf("usage: %s\n", usage);
      return std::nullopt;
    }
    SG_CHECK(flag.rfind("--", 0) == 0 && defaults.count(flag.substr(2)) && i + 1 < argc, "unexpected argument '",
             flag, "' (see --help)");
    defaults[flag.substr(2)] = argv[++i];
  }
  return defaults;
}

// Sets the environment variable `name` to `value` (unsets it where null)
// for as long as it lives, then puts back what was there: a benchmark timing
// both sides of a switch that the kernels read at each call (docs/gpu.md,
// Switches).
class ScopedEnv {
 public:
  ScopedEnv(std::string name, const char* value) : name_(std::move(name)) {
    const char* before = std::getenv(name_.c_str());
    was_set_ = before != nullptr;
    if (was_set_) before_ = before;
    if (value) setenv(name_.c_str(), value, 1);
    else unsetenv(name_.c_str());
  }
  ~ScopedEnv() {
    if (was_set_) setenv(name_.c_str(), before_.c_str(), 1);
    else unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_, before_;
  bool was_set_ = false;
};

// Runs fn with `name` set to `value` (unset where null), then as it was.
inline void with_env(const char* name, const char* value, const std::function<void()>& fn) {
  const ScopedEnv set(name, value);
  fn();
}

inline int run_main(const char* program, const std::function<int()>& body) {
  try {
    return body();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "%s: %s\n", program, error.what());
    return 1;
  }
}

}  // namespace sg
