// The backward engine: visits every Variable that the output depends on in
// reverse topological order, so each one's gradient is complete (all its
// consumers have contributed) before it is passed on.
//
//   1. Depth-first search from the output along grad_fn inputs gives a
//      post-order: every Variable after the ones it was computed from.
//   2. Walking it backwards, each computed Variable runs its Node's
//      pre-backward hooks, then the backward rule, and adds the resulting
//      gradients to its inputs' pending gradients.
//   3. A leaf that requires grad adds its pending gradient into .grad (+=,
//      so gradients accumulate across backward calls, as in PyTorch; a
//      stale buffer is written instead) and runs its post-accumulate hooks.
//      A rule may have written its part of a leaf's gradient into .grad
//      itself (claim_leaf_grad); the leaf is then pending with no tensor,
//      or with only the other consumers' part.
//
// Unless retain_graph is set, each Node's backward rule (and with it the
// tensors it saved, and the values whose last Variable it held) is dropped
// right after it runs, and so are its edges to its inputs: activations are
// freed as the pass moves down the network (autograd/variable.h,
// VariableState::handles; tests/autograd/test_engine.cpp).
#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "autograd/checkpoint.h"
#include "autograd/variable.h"
#include "tensor/ops.h"

namespace sg {
namespace {

thread_local bool g_frees_saved_tensors = false;
// The leaves the running rule claimed (claim_leaf_grad); null outside a rule.
thread_local std::vector<VariableState*>* g_claimed_leaves = nullptr;

// Post-order of the states reachable from the roots through grad_fn inputs,
// iteratively (a deep network would overflow a recursive search). One
// search per root, sharing what was seen: each state still comes after all
// the states it was computed from, so walked backwards every consumer comes
// before what it consumed.
std::vector<std::shared_ptr<VariableState>> post_order(const std::vector<std::shared_ptr<VariableState>>& roots) {
  std::vector<std::shared_ptr<VariableState>> order;
  std::unordered_set<VariableState*> seen;
  std::vector<std::pair<std::shared_ptr<VariableState>, size_t>> stack;
  for (const std::shared_ptr<VariableState>& root : roots) {
    if (seen.insert(root.get()).second) stack.push_back({root, 0});
    while (!stack.empty()) {
      auto& [state, next_input] = stack.back();
      const Node* node = state->grad_fn.get();
      if (node && next_input < node->inputs.size()) {
        const std::shared_ptr<VariableState>& input = node->inputs[next_input++];
        if (input->requires_grad && seen.insert(input.get()).second) stack.push_back({input, 0});
        continue;
      }
      order.push_back(state);
      stack.pop_back();
    }
  }
  return order;
}

// An undefined grad marks a leaf as reached with nothing to add (a rule wrote into its buffer).
void accumulate(std::unordered_map<VariableState*, Tensor>& pending, VariableState* state, const Tensor& grad) {
  auto it = pending.find(state);
  if (it == pending.end()) pending.emplace(state, grad);
  else if (!it->second.defined()) it->second = grad;
  else if (grad.defined()) it->second = add(it->second, grad);  // a fresh tensor: the old one may be shared
}

// Adds grad into a leaf's .grad, owned by the leaf and counted as a gradient.
void accumulate_into_leaf(VariableState& leaf, const Tensor& grad) {
  if (!leaf.grad.defined()) {
    leaf.grad = grad.with_category(MemoryCategory::gradient);  // a copy: grad may be shared with another input
  } else if (leaf.grad_stale) {
    leaf.grad.copy_(grad);  // the buffer's values are leftovers: written, not added to (converting 16 bits to f32)
    leaf.grad_stale = false;
  } else if ((leaf.grad.dtype() == DType::f32 || leaf.grad.dtype() == DType::f64) && leaf.grad.is_contiguous()) {
    axpy_(leaf.grad, 1.0, grad);  // a 16-bit gradient is read as it is, with no f32 copy on a GPU
  } else {
    leaf.grad.copy_(add(leaf.grad, grad.to(leaf.grad.dtype())));
  }
}

}  // namespace

bool backward_frees_saved_tensors() { return g_frees_saved_tensors; }

Destination claim_leaf_grad(const Variable& input, DType dtype) {
  if (g_claimed_leaves == nullptr || !input.defined()) return {};
  VariableState& leaf = *input.state();
  if (leaf.grad_fn || !leaf.requires_grad || !leaf.grad.defined() || !leaf.grad.is_contiguous()) return {};
  if (leaf.grad.is_sharded() || leaf.grad.dtype() != (dtype == DType::f64 ? DType::f64 : DType::f32)) return {};
  if (leaf.grad.device() != leaf.data.device()) return {};  // a buffer elsewhere (offloaded) takes a copy
  // The buffer stays stale until the rule returns (a rule that throws has
  // written nothing the next backward must keep); a second claim in the
  // same rule adds to the first's result.
  std::vector<VariableState*>& claimed = *g_claimed_leaves;
  const bool again = std::find(claimed.begin(), claimed.end(), &leaf) != claimed.end();
  if (!again) claimed.push_back(&leaf);
  return {leaf.grad, again || !leaf.grad_stale};
}

std::vector<Variable> Variable::reachable_leaves() const {
  check_defined("reachable_leaves()");
  std::vector<Variable> leaves;
  if (!requires_grad()) return leaves;
  for (const std::shared_ptr<VariableState>& state : post_order({state_})) {
    if (!state->grad_fn) leaves.push_back(Variable::from_state(state));
  }
  return leaves;
}

void Variable::backward(const Tensor& grad_output, bool retain_graph) const {
  check_defined("backward()");
  sg::backward({*this}, {grad_output}, retain_graph);
}

namespace {

// How many backward passes are running on this thread (a checkpoint's
// recompute runs one inside another's rule), and how many checkpointed
// segments still wait for a gradient of one of their outputs: none may be
// left when the outermost pass ends (autograd/checkpoint.h).
thread_local int g_depth = 0;
thread_local int g_segments_waiting = 0;

void run_backward(const std::vector<Variable>& outputs, const std::vector<Tensor>& grad_outputs, bool retain_graph,
                  const std::vector<Variable>* wrt, std::vector<Tensor>* captured);

}  // namespace

void segments_waiting(int change) { g_segments_waiting += change; }

void backward(const std::vector<Variable>& outputs, const std::vector<Tensor>& grad_outputs, bool retain_graph) {
  run_backward(outputs, grad_outputs, retain_graph, nullptr, nullptr);
}

std::vector<Tensor> backward_to(const std::vector<Variable>& outputs, const std::vector<Tensor>& grad_outputs,
                                const std::vector<Variable>& wrt) {
  std::vector<Tensor> captured(wrt.size());
  run_backward(outputs, grad_outputs, /*retain_graph=*/false, &wrt, &captured);
  return captured;
}

namespace {

void run_backward(const std::vector<Variable>& outputs, const std::vector<Tensor>& grad_outputs, bool retain_graph,
                  const std::vector<Variable>* wrt, std::vector<Tensor>* captured) {
  struct Depth {
    Depth() { ++g_depth; }
    ~Depth() {
      if (--g_depth == 0) g_segments_waiting = 0;  // a pass that threw leaves no count behind
    }
  } depth;
  std::unordered_map<const VariableState*, size_t> capture;
  if (wrt) {
    for (size_t i = 0; i < wrt->size(); ++i) {
      SG_CHECK((*wrt)[i].defined() && (*wrt)[i].is_leaf(), "backward_to: gradients are returned for leaves only");
      capture.emplace((*wrt)[i].state().get(), i);
    }
  }
  SG_CHECK(outputs.size() == grad_outputs.size() && !outputs.empty(), "backward(): ", outputs.size(),
           " outputs and ", grad_outputs.size(), " gradients; give one gradient for each output");
  std::unordered_map<VariableState*, Tensor> pending;
  std::vector<std::shared_ptr<VariableState>> roots;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Variable& output = outputs[i];
    SG_CHECK(output.defined(), "backward() on an undefined Variable (default-constructed)");
    SG_CHECK(output.requires_grad(), "backward() on a Variable that does not require grad: nothing that requires ",
             "grad was used to compute ", output.data().str(), " (or it was computed under NoGradGuard)");
    SG_CHECK(grad_outputs[i].shape() == output.shape(), "backward(): the gradient ", grad_outputs[i].str(),
             " does not match the output ", output.data().str());
    SG_CHECK(pending.emplace(output.state().get(), grad_outputs[i]).second, "backward(): an output given twice");
    roots.push_back(output.state());
  }
  std::vector<std::shared_ptr<VariableState>> order = post_order(roots);
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    VariableState* state = it->get();
    auto found = pending.find(state);
    if (found == pending.end()) continue;  // no path from the output carried a gradient here
    Tensor grad = std::move(found->second);
    pending.erase(found);

    if (!state->grad_fn) {
      if (auto c = capture.find(state); c != capture.end()) {
        (*captured)[c->second] = grad;
        continue;
      }
      if (grad.defined()) accumulate_into_leaf(*state, grad);
      Variable leaf = Variable::from_state(*it);
      for (auto& hook : state->post_accumulate_hooks) hook(leaf);
      continue;
    }
    Node& node = *state->grad_fn;
    SG_CHECK(node.backward != nullptr, "backward() through '", node.name, "' a second time: its saved tensors were ",
             "freed by the first pass; call the first backward(/*retain_graph=*/true) to keep them");
    for (auto& hook : node.pre_backward_hooks) hook(node);
    struct RuleScope {  // restored on the way out (a rule may itself run a backward)
      bool outer_frees = g_frees_saved_tensors;
      std::vector<VariableState*>* outer_claimed = g_claimed_leaves;
      RuleScope(bool frees, std::vector<VariableState*>* claimed) {
        g_frees_saved_tensors = frees;
        g_claimed_leaves = claimed;
      }
      ~RuleScope() { g_frees_saved_tensors = outer_frees, g_claimed_leaves = outer_claimed; }
    };
    std::vector<Tensor> input_grads;
    std::vector<VariableState*> claimed;
    {
      RuleScope scope(!retain_graph, &claimed);
      // A rule that can add input 0's gradient so far into its own does so
      // in the same pass; its result then replaces the pending one.
      auto already = node.backward_adding && !node.inputs.empty() ? pending.find(node.inputs[0].get()) : pending.end();
      if (already != pending.end()) {
        const Tensor so_far = std::move(already->second);
        pending.erase(already);
        input_grads = node.backward_adding(grad, so_far);
      } else {
        input_grads = node.backward(grad);
      }
    }
    SG_CHECK(input_grads.size() == node.inputs.size(), "'", node.name, "' returned ", input_grads.size(),
             " gradients for ", node.inputs.size(), " inputs");
    if (!retain_graph) node.backward = nullptr, node.backward_adding = nullptr;
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      VariableState* input = node.inputs[i].get();
      if (!input->requires_grad || !input_grads[i].defined()) continue;
      const Shape& shape = input->data.defined() ? input->data.shape() : input->shape_of_dropped;
      SG_CHECK(input_grads[i].shape() == shape, "'", node.name, "' returned a gradient ", input_grads[i].str(),
               " for its input ", i, " of shape ", shape_str(shape));
      accumulate(pending, input, input_grads[i]);
    }
    for (VariableState* leaf : claimed) {
      const bool is_input = std::any_of(node.inputs.begin(), node.inputs.end(),
                                        [leaf](const std::shared_ptr<VariableState>& in) { return in.get() == leaf; });
      SG_CHECK(is_input, "'", node.name, "' claimed the gradient of '", leaf->name, "', which is not one of its inputs");
      leaf->grad_stale = false;  // written by the rule
      accumulate(pending, leaf, Tensor());
    }
    if (!retain_graph) node.inputs.clear();  // the edges were followed: nothing reads them again
    it->reset();                             // nor this list's hold on the state
  }
  SG_CHECK(g_depth > 1 || g_segments_waiting == 0, g_segments_waiting, " checkpointed segment(s) got a gradient for ",
           "some of their outputs and none for the others, so they never ran their backward: every output of a ",
           "checkpoint() must reach the loss (autograd/checkpoint.h)");
}

}  // namespace

}  // namespace sg
