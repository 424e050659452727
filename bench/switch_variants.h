// Switch variants: several settings of the environment switches the kernels
// read at each call (kernels/env_switch.h), timed in one process, turn
// about, on one model and one set of batches (bench_gpt --variants):
//
//   bench_gpt --variants "wgmma:SG_FLASH_WGMMA=1 wgmma_plain:SG_FLASH_WGMMA=1,SG_FLASH_WGMMA_OVERLAP=0"
//
// Why one process: a GPU lease is short, and each process of its own pays
// for building the model, cuBLASLt's plans and the allocator's first
// allocations (seconds) to time a few hundred milliseconds of steps; and
// variants taking turns, round after round, see the same clocks and the same
// neighbours, so their differences are not the drift between processes.
//
// Each variant is also checked against the defaults before it is timed: the
// loss and every parameter's gradient from one batch, the defaults' and its
// own, at the weights as they stand when its first turn comes. A kernel that
// computes the wrong thing shows up as a gradient far from the defaults',
// and is not timed (a wrong update would change the weights every later
// variant runs on). The riskiest variants go last: a kernel that faults
// leaves the CUDA context unusable, and the turns stop there.
#pragma once

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "examples/cli.h"
#include "kernels/env_switch.h"
#include "kernels/error.h"

namespace sg {

struct SwitchVariant {
  std::string name;
  std::vector<std::pair<std::string, std::string>> settings;  // variable, value

  // "SG_A=1,SG_B=0", or "(the defaults)".
  std::string describe() const {
    std::string text;
    for (const auto& [variable, value] : settings) text += (text.empty() ? "" : ",") + variable + "=" + value;
    return text.empty() ? "(the defaults)" : text;
  }
};

inline bool read_at_each_call(const std::string& variable) {
  for (const char* known : kSwitchesReadAtEachCall) {
    if (variable == known) return true;
  }
  return false;
}

// "name:VAR=value,VAR=value name2:..." (whitespace between variants; a
// variant with no settings, "again:", runs the defaults a second time,
// which shows the noise between variants). "default" comes first.
inline std::vector<SwitchVariant> parse_switch_variants(const std::string& spec) {
  std::vector<SwitchVariant> variants = {{"default", {}}};
  size_t at = 0;
  while (true) {
    at = spec.find_first_not_of(" \t\n", at);
    if (at == std::string::npos) break;
    const size_t end = std::min(spec.find_first_of(" \t\n", at), spec.size());
    const std::string entry = spec.substr(at, end - at);
    at = end;
    const size_t colon = entry.find(':');
    SG_CHECK(colon != std::string::npos && colon > 0, "--variants: '", entry,
             "' is not name:VAR=value[,VAR=value...] (e.g. wgmma:SG_FLASH_WGMMA=1)");
    SwitchVariant variant{entry.substr(0, colon), {}};
    for (const SwitchVariant& other : variants) {
      SG_CHECK(other.name != variant.name, "--variants: the name '", variant.name, "' is used twice",
               variant.name == "default" ? " ('default' is always the first variant)" : "");
    }
    std::string rest = entry.substr(colon + 1);
    while (!rest.empty()) {
      const size_t comma = std::min(rest.find(','), rest.size());
      const std::string setting = rest.substr(0, comma);
      rest = comma < rest.size() ? rest.substr(comma + 1) : "";
      const size_t equals = setting.find('=');
      SG_CHECK(equals != std::string::npos && equals > 0, "--variants: '", setting, "' in '", entry,
               "' is not VAR=value");
      const std::string variable = setting.substr(0, equals);
      SG_CHECK(read_at_each_call(variable), "--variants: ", variable,
               " is not a switch the kernels read at each call (kernels/env_switch.h lists those), so one process "
               "cannot time both of its sides; set it for the whole run instead (", variable,
               "=... bench_gpt ...), once per setting");
      for (const auto& earlier : variant.settings) {
        SG_CHECK(earlier.first != variable, "--variants: '", entry, "' sets ", variable, " twice");
      }
      variant.settings.emplace_back(variable, setting.substr(equals + 1));
    }
    variants.push_back(std::move(variant));
  }
  return variants;
}

// Sets a variant's switches for as long as it lives, then puts back what
// the environment held before (set or unset). A variant names each switch
// once (parse_switch_variants), so the order they are put back in does not
// matter.
class ScopedSwitches {
 public:
  explicit ScopedSwitches(const SwitchVariant& variant) {
    for (const auto& [variable, value] : variant.settings) {
      set_.push_back(std::make_unique<ScopedEnv>(variable, value.c_str()));
    }
  }

 private:
  std::vector<std::unique_ptr<ScopedEnv>> set_;
};

// What one backward gives at the starting weights: the loss and each
// parameter's gradient, by name.
struct GradientCheck {
  double loss = 0;
  std::vector<std::pair<std::string, std::vector<float>>> gradients;
};

// How far a variant's check is from the defaults': the loss's relative
// difference, and the largest over parameters of |g - g0| / |g0| (L2 norms),
// with that parameter's name. NaN anywhere makes it NaN, which no tolerance
// passes.
struct CheckDifference {
  double loss = 0;
  double worst_gradient = 0;
  std::string worst_parameter;

  bool within(double tolerance) const { return loss <= tolerance && worst_gradient <= tolerance; }
};

inline CheckDifference compare_checks(const GradientCheck& reference, const GradientCheck& run) {
  SG_CHECK(reference.gradients.size() == run.gradients.size(), "compare_checks: ", reference.gradients.size(),
           " parameters against ", run.gradients.size());
  CheckDifference d;
  d.loss = std::abs(run.loss - reference.loss) / std::max(std::abs(reference.loss), 1e-30);
  if (std::isnan(run.loss)) d.loss = NAN;
  for (size_t p = 0; p < reference.gradients.size(); ++p) {
    const auto& [name, want] = reference.gradients[p];
    const std::vector<float>& got = run.gradients[p].second;
    SG_CHECK(run.gradients[p].first == name && got.size() == want.size(), "compare_checks: parameter ", p, " is ",
             name, " (", want.size(), " values) against ", run.gradients[p].first, " (", got.size(), ")");
    double difference = 0, norm = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      const double delta = double(got[i]) - double(want[i]);
      difference += delta * delta;
      norm += double(want[i]) * double(want[i]);
    }
    const double relative = difference == 0 ? 0.0 : std::sqrt(difference) / std::max(std::sqrt(norm), 1e-30);
    if (std::isnan(d.worst_gradient)) continue;
    if (std::isnan(relative) || relative > d.worst_gradient || d.worst_parameter.empty()) {
      d.worst_gradient = relative;
      d.worst_parameter = name;
    }
  }
  return d;
}

}  // namespace sg
