// The small command lines of gpt_eval and gpt_sample: "--name value" pairs
// over a table of defaults, --help, and main()'s error handling (an error is
// one line on stderr and exit status 1, never a crash).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <initializer_list>
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

// The whole of `value` read by `parse` (std::stoll or std::stod), or an
// error naming the flag: "1e3" or "12x" is a mistake to report, not 1 or 12
// (std::stoll alone stops at the first character it cannot read, and its
// own error says only "stoll").
template <typename Number, typename Parse>
Number parse_whole_flag(const std::string& flag, const std::string& value, const char* kind, Parse parse) {
  size_t used = 0;
  Number result{};
  try {
    result = parse(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  SG_CHECK(!value.empty() && used == value.size(), "--", flag, " expects ", kind, ", got '", value, "'");
  return result;
}

inline int64_t parse_int_flag(const std::string& flag, const std::string& value) {
  return parse_whole_flag<int64_t>(flag, value, "an integer",
                                   [](const std::string& v, size_t* used) { return std::stoll(v, used); });
}

inline double parse_number_flag(const std::string& flag, const std::string& value) {
  return parse_whole_flag<double>(flag, value, "a number",
                                  [](const std::string& v, size_t* used) { return std::stod(v, used); });
}

// The same, for a count held in an int (ranks, stages, threads, repeats).
inline int parse_int32_flag(const std::string& flag, const std::string& value) {
  const int64_t result = parse_int_flag(flag, value);
  SG_CHECK(result >= INT32_MIN && result <= INT32_MAX, "--", flag, " ", value, " is out of range");
  return int(result);
}

// One of parse_args's flags, read as above.
inline int64_t int_arg(const std::map<std::string, std::string>& args, const std::string& flag) {
  return parse_int_flag(flag, args.at(flag));
}

inline double number_arg(const std::map<std::string, std::string>& args, const std::string& flag) {
  return parse_number_flag(flag, args.at(flag));
}

// The flag's value when it is one of `choices` (a few words), or an error listing them.
inline const std::string& choice_arg(const std::map<std::string, std::string>& args, const std::string& flag,
                                     std::initializer_list<const char*> choices) {
  const std::string& value = args.at(flag);
  std::string listed;
  for (const char* choice : choices) {
    if (value == choice) return value;
    listed += listed.empty() ? choice : std::string(", ") + choice;
  }
  SG_FAIL("--", flag, " expects one of ", listed, ", got '", value, "'");
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
