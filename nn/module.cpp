#include "nn/module.h"

#include <functional>
#include <sstream>
#include <unordered_set>

#include "tensor/rng.h"

namespace sg {
namespace {

thread_local bool g_deferred_parameters = false;
thread_local Device g_parameter_device = Device::cpu();

// Depth-first walk: fn(full_name, parameter) for each parameter, each Variable once.
void walk(const ModuleState& state, const std::string& prefix, std::unordered_set<const VariableState*>& seen,
          const std::function<void(const std::string&, const NamedParameter&)>& fn) {
  for (const NamedParameter& p : state.parameters) {
    if (seen.insert(p.variable.state().get()).second) fn(prefix + p.name, p);
  }
  for (const auto& [name, child] : state.children) walk(*child, prefix + name + ".", seen, fn);
}

}  // namespace

DeferredParameters::DeferredParameters() : previous_(g_deferred_parameters) { g_deferred_parameters = true; }
DeferredParameters::~DeferredParameters() { g_deferred_parameters = previous_; }
bool DeferredParameters::active() { return g_deferred_parameters; }

ParametersOn::ParametersOn(Device device) : previous_(g_parameter_device) { g_parameter_device = device; }
ParametersOn::~ParametersOn() { g_parameter_device = previous_; }
Device ParametersOn::current() { return g_parameter_device; }

void initialize_values(const ParamInit& init, uint64_t seed, const std::string& name, Tensor& values,
                       int64_t first_index) {
  switch (init.kind) {
    case ParamInit::Kind::normal: fill_normal_range_(values, seed, name, first_index, 0.0, init.std); break;
    case ParamInit::Kind::zeros: values.fill_(0.0); break;
    case ParamInit::Kind::ones: values.fill_(1.0); break;
  }
}

std::vector<NamedParameter> Module::named_parameters() const {
  std::vector<NamedParameter> result;
  std::unordered_set<const VariableState*> seen;
  walk(*state_, "", seen, [&](const std::string& name, const NamedParameter& p) {
    result.push_back({name, p.variable, p.init});
  });
  return result;
}

std::vector<Variable> Module::parameters() const {
  std::vector<Variable> result;
  for (const NamedParameter& p : named_parameters()) result.push_back(p.variable);
  return result;
}

int64_t Module::parameter_count() const {
  int64_t count = 0;
  for (const NamedParameter& p : named_parameters()) count += p.variable.numel();
  return count;
}

void Module::initialize(uint64_t seed) {
  for (NamedParameter& p : named_parameters()) {
    p.variable.state()->name = p.name;
    Tensor data = p.variable.data();
    if (data.layout().is_released()) continue;  // deferred: its shards are initialized where they live
    Tensor flat = data.view({data.numel()});
    initialize_values(p.init, seed, p.name, flat, 0);
  }
}

void Module::train(bool training) {
  std::function<void(ModuleState&)> set = [&](ModuleState& state) {
    state.training = training;
    for (auto& [name, child] : state.children) set(*child);
  };
  set(*state_);
}

std::string Module::describe() const {
  std::ostringstream out;
  for (const NamedParameter& p : named_parameters()) out << p.name << " " << p.variable.data().str() << "\n";
  out << "parameters: " << parameter_count() << "\n";
  return out.str();
}

Variable Module::param(const std::string& name, const Shape& shape, ParamInit init) {
  check_new_name(name);
  const TensorOptions options = TensorOptions().device(ParametersOn::current()).category(MemoryCategory::parameter);
  Tensor values = DeferredParameters::active() ? Tensor::empty_with(Layout::released(shape, 0, 1), options)
                                               : Tensor::zeros(shape, options);
  Variable variable(values, /*requires_grad=*/true, name);
  state_->parameters.push_back({name, variable, init});
  return variable;
}

Variable Module::shared_param(const std::string& name, const Variable& variable) {
  check_new_name(name);
  state_->parameters.push_back({name, variable, ParamInit::zeros()});
  return variable;
}

void Module::register_child(const std::string& name, const std::shared_ptr<ModuleState>& state) {
  check_new_name(name);
  state_->children.emplace_back(name, state);
}

void Module::check_new_name(const std::string& name) const {
  SG_CHECK(!name.empty() && name.find(' ') == std::string::npos, "module member names must be non-empty words, got '",
           name, "'");
  for (const NamedParameter& p : state_->parameters) {
    SG_CHECK(p.name != name, "a parameter named '", name, "' is already registered in this module");
  }
  for (const auto& [child_name, child] : state_->children) {
    SG_CHECK(child_name != name, "a child module named '", name, "' is already registered in this module");
  }
}

}  // namespace sg
