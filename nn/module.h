// Module: named, hierarchical parameters with the name written once.
//
//   class Mlp : public Module {
//    public:
//     explicit Mlp(int64_t C) : c_fc_(child("c_fc", Linear(C, 4 * C))), c_proj_(child("c_proj", Linear(4 * C, C))) {}
//     Variable operator()(const Variable& x) const { return c_proj_(gelu(c_fc_(x))); }
//    private:
//     Linear c_fc_, c_proj_;
//   };
//
// A member is created and registered in one expression: param() and child()
// record it under its name and hand it back. Modules are plain values whose
// copies share one state (parameters are shared Variables), so the member
// initialized from child(...) *is* the registered module.
//
// Parameters are allocated when registered and filled by initialize(seed):
// each one by its rule (normal with a std, zeros or ones) through the counter
// RNG keyed by its *full* name ("h.3.mlp.c_fc.weight"), which only the root
// knows. That is why the same weights come out on 1 rank or sharded over N.
//
// Read next: nn/layers.h.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/variable.h"

namespace sg {

// How initialize() fills a parameter, and whether weight decay applies to it
// by default (weights of linear maps yes; biases, norms and embeddings no).
struct ParamInit {
  enum class Kind { normal, zeros, ones } kind = Kind::zeros;
  double std = 0.0;
  bool decays = false;

  static ParamInit normal(double std, bool decays = true) { return {Kind::normal, std, decays}; }
  static ParamInit zeros() { return {Kind::zeros, 0.0, false}; }
  static ParamInit ones() { return {Kind::ones, 0.0, false}; }
};

struct NamedParameter {
  std::string name;  // full dotted path from the module it was listed from
  Variable variable;
  ParamInit init;
};

// Fills `values` (1-D f32) with elements [first_index, first_index + n) of
// the parameter `name` as initialize(seed) would: the whole parameter, or
// any piece of it (a ZeRO-3 shard).
void initialize_values(const ParamInit& init, uint64_t seed, const std::string& name, Tensor& values,
                       int64_t first_index);

// While one is alive, Module::param() allocates nothing: parameters are born
// as released placeholders (their shape, no elements), for ZeRO-3 to create
// and initialize only each rank's shard. No rank ever holds the whole model.
class DeferredParameters {
 public:
  DeferredParameters();
  ~DeferredParameters();
  DeferredParameters(const DeferredParameters&) = delete;
  DeferredParameters& operator=(const DeferredParameters&) = delete;
  static bool active();

 private:
  bool previous_;
};

// While one is alive, Module::param() creates parameters on `device` (the
// CPU otherwise), where initialize() then fills them:
//   ParametersOn on(Device::cuda(0));  Gpt model(cfg);
class ParametersOn {
 public:
  explicit ParametersOn(Device device);
  ~ParametersOn();
  ParametersOn(const ParametersOn&) = delete;
  ParametersOn& operator=(const ParametersOn&) = delete;
  static Device current();

 private:
  Device previous_;
};

struct ModuleState {
  std::vector<NamedParameter> parameters;  // this module's own, in registration order
  std::vector<std::pair<std::string, std::shared_ptr<ModuleState>>> children;
  bool training = true;
};

class Module {
 public:
  Module() : state_(std::make_shared<ModuleState>()) {}
  virtual ~Module() = default;

  // Every parameter once, depth first in registration order, with full names.
  // A parameter reachable under two names (tied weights) is listed once.
  std::vector<NamedParameter> named_parameters() const;
  std::vector<Variable> parameters() const;
  int64_t parameter_count() const;  // elements, tied weights counted once

  // Fills every parameter by its rule with the counter RNG under `seed`, and
  // names each Variable with its full name. Deferred (placeholder)
  // parameters are only named: their owner initializes their shards.
  void initialize(uint64_t seed);

  void train(bool training = true);
  void eval() { train(false); }
  bool is_training() const { return state_->training; }

  // One line per parameter: name, placement and shape ("h.0.ln_1.weight f32[128]").
  std::string describe() const;

 protected:
  // Registers a parameter of `shape` (f32, requires grad) and returns it.
  Variable param(const std::string& name, const Shape& shape, ParamInit init);
  // Registers an existing Variable under another name too (tied weights):
  // it is listed and initialized once, under its first name.
  Variable shared_param(const std::string& name, const Variable& variable);

  template <typename M>
  M child(const std::string& name, M module) {
    register_child(name, module.state_);
    return module;
  }

 private:
  void register_child(const std::string& name, const std::shared_ptr<ModuleState>& state);
  void check_new_name(const std::string& name) const;
  std::shared_ptr<ModuleState> state_;
};

}  // namespace sg
