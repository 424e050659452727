// Variable handles, grad mode and the recording of ops into the tape.
#include "autograd/variable.h"

#include <atomic>

#include "tensor/ops.h"

namespace sg {
namespace {

thread_local bool g_grad_mode = true;
std::atomic<uint64_t> g_next_sequence{0};

}  // namespace

Variable::Variable(Tensor data, bool requires_grad, std::string name) : state_(std::make_shared<VariableState>()) {
  SG_CHECK(data.defined(), "a Variable needs a defined tensor");
  SG_CHECK(!requires_grad || is_floating(data.dtype()), "only floating tensors can require gradients, got ",
           data.str(), (name.empty() ? "" : " for "), name);
  state_->data = std::move(data);
  state_->requires_grad = requires_grad;
  state_->name = std::move(name);
  state_->handles = 1;
}

Variable Variable::from_state(std::shared_ptr<VariableState> state) {
  Variable variable;
  variable.state_ = std::move(state);
  variable.hold();
  return variable;
}

void Variable::let_go() noexcept {
  if (state_ && --state_->handles == 0 && state_->grad_fn && state_->data.defined()) {
    state_->shape_of_dropped = state_->data.shape();
    state_->data = Tensor();
  }
  state_.reset();
}

void Variable::check_defined(const char* what) const {
  SG_CHECK(state_ != nullptr, what, " on an undefined Variable (default-constructed)");
}

const Tensor& Variable::data() const {
  check_defined("data()");
  SG_CHECK(state_->data.defined(), "data() of a computed Variable whose value was dropped when its last handle went ",
           "(autograd/variable.h, VariableState::handles)");
  return state_->data;
}

Tensor Variable::value() const {
  check_defined("value()");
  if (state_->before_use) state_->before_use(*state_);
  return state_->data;
}

void Variable::replace_data(const Tensor& data) {
  check_defined("replace_data()");
  SG_CHECK(data.shape() == state_->data.shape() && data.dtype() == state_->data.dtype(), "replace_data: ", data.str(),
           " does not have the shape and dtype of ", state_->data.str(), (state_->name.empty() ? "" : " of "),
           state_->name);
  state_->data = data;
}

void Variable::set_data(const Tensor& data) {
  check_defined("set_data()");
  SG_CHECK(data.layout() == state_->data.layout() && data.dtype() == state_->data.dtype(), "set_data: ",
           data.str(), " does not match ", state_->data.str(), (state_->name.empty() ? "" : " of "), state_->name);
  state_->data = data;
}

void Variable::retype(const Tensor& data) {
  check_defined("retype()");
  SG_CHECK(data.shape() == state_->data.shape() && is_floating(data.dtype()), "retype: ", data.str(),
           " is not a floating tensor of the shape of ", state_->data.str());
  state_->data = data;
  state_->grad = Tensor();
}

const Tensor& Variable::grad() const {
  check_defined("grad()");
  if (state_->grad_stale) {  // read before any backward wrote it: what it holds is zero
    Tensor grad = state_->grad;  // a handle to the same storage
    grad.fill_(0.0);
    state_->grad_stale = false;
  }
  return state_->grad;
}

void Variable::set_grad(const Tensor& grad) {
  check_defined("set_grad()");
  SG_CHECK(!grad.defined() || grad.layout() == state_->data.layout(), "set_grad: ", grad.str(), " does not match ",
           state_->data.str());
  state_->grad = grad;
  state_->grad_stale = false;
}

void Variable::set_stale_grad(const Tensor& grad) {
  SG_CHECK(grad.defined(), "set_stale_grad: the buffer must be defined");
  set_grad(grad);
  state_->grad_stale = true;
}

void Variable::zero_grad() {
  check_defined("zero_grad()");
  state_->grad = Tensor();
  state_->grad_stale = false;
}

bool Variable::requires_grad() const {
  check_defined("requires_grad()");
  return state_->requires_grad;
}

const std::shared_ptr<Node>& Variable::grad_fn() const {
  check_defined("grad_fn()");
  return state_->grad_fn;
}

const std::string& Variable::name() const {
  check_defined("name()");
  return state_->name;
}

void Variable::add_post_accumulate_hook(VariableState::PostAccumulateHook hook) {
  check_defined("add_post_accumulate_hook()");
  SG_CHECK(is_leaf(), "post-accumulate hooks go on leaves (parameters); ", state_->name, " is computed by ",
           state_->grad_fn->name);
  state_->post_accumulate_hooks.push_back(std::move(hook));
}

void Variable::backward(bool retain_graph) const {
  check_defined("backward()");
  SG_CHECK(numel() == 1, "backward() without a gradient needs a one-element Variable (a loss), got ", data().str(),
           "; pass the gradient of the output explicitly");
  backward(Tensor::ones(data().shape(), TensorOptions().dtype(dtype()).device(device())), retain_graph);
}

bool grad_mode_enabled() { return g_grad_mode; }

GradModeGuard::GradModeGuard(bool enabled) : previous_(g_grad_mode) { g_grad_mode = enabled; }
GradModeGuard::~GradModeGuard() { g_grad_mode = previous_; }

Variable make_result(Tensor result, const char* op, std::vector<Variable> inputs, Node::BackwardFn backward) {
  bool needs_grad = false;
  for (const Variable& input : inputs) needs_grad |= input.requires_grad();
  if (!grad_mode_enabled() || !needs_grad) return Variable(std::move(result));
  auto node = std::make_shared<Node>();
  node->name = op;
  node->backward = std::move(backward);
  node->sequence = g_next_sequence++;
  for (const Variable& input : inputs) node->inputs.push_back(input.state());
  Variable output(std::move(result), /*requires_grad=*/true);
  output.state()->grad_fn = std::move(node);
  return output;
}

}  // namespace sg
