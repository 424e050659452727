// Glue between nn/ and optim/ (neither includes the other): a model's
// trainable parameters as the ZeRO optimizer takes them, with their full
// names, their weight-decay class, and an initializer for any slice of them
// (what a model born partitioned under nn::DeferredParameters needs).
#pragma once

#include <vector>

#include "nn/module.h"
#include "optim/zero.h"

namespace sg {

inline std::vector<ZeroParameter> zero_parameters(const Module& model, uint64_t seed) {
  std::vector<ZeroParameter> params;
  for (const NamedParameter& p : model.named_parameters()) {
    if (!p.variable.requires_grad()) continue;  // frozen: stays whole, outside the optimizer
    ParamInit init = p.init;
    std::string name = p.name;
    params.push_back({p.name, p.variable, p.init.decays,
                      [init, seed, name](Tensor& values, int64_t first) { initialize_values(init, seed, name, values, first); }});
  }
  return params;
}

}  // namespace sg
