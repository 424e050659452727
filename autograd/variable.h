// Variable: a Tensor that remembers how it was computed, so gradients can
// flow back to it. The define-by-run tape is the graph of Nodes hanging off
// Variables: every differentiable op (autograd/functions.h) records one Node
// holding its inputs, what it saved, and its backward rule, written right
// beside its forward.
//
//   Variable w(Tensor::zeros({3, 3}), /*requires_grad=*/true);
//   Variable loss = sum(matmul(x, w));
//   loss.backward();          // w.grad() now holds dloss/dw
//
// Variables are shared handles (like Tensor): copies see the same data,
// gradient and history. Two seams let dist/ plug in without autograd knowing
// about it: a pre-backward hook on a Node (runs just before its backward
// rule, e.g. to gather a sharded block's parameters) and a post-accumulate
// hook on a leaf Variable (runs each time a gradient is added to it, e.g. to
// reduce-scatter it).
//
// Read next: autograd/functions.h (the ops), autograd/engine.cpp (backward).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor/ops.h"
#include "tensor/tensor.h"

namespace sg {

class Variable;
struct VariableState;

// One recorded op. backward maps the gradient of the op's output to the
// gradients of its inputs (one per input; an undefined Tensor for an input
// that needs none). It owns the tensors the op saved; the engine drops it
// after running it unless the graph is retained.
struct Node {
  using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;
  // backward's gradients, with `already` (what input 0 has collected from
  // its other consumers so far) added into input 0's in the same pass.
  using AddingBackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output, const Tensor& already)>;
  using PreBackwardHook = std::function<void(Node&)>;

  std::string name;  // the op, for error messages and debugging: "matmul", "layernorm"
  std::vector<std::shared_ptr<VariableState>> inputs;
  BackwardFn backward;
  // Optional (LayerNorm has one): the engine calls it instead of backward
  // when input 0 already has a pending gradient, and takes input 0's result
  // as the whole of it, so no separate add runs (the residual stream's
  // gradient joins the LayerNorm's in its own kernel).
  AddingBackwardFn backward_adding;
  std::vector<PreBackwardHook> pre_backward_hooks;
  uint64_t sequence = 0;  // creation order: later ops have larger numbers

  void add_pre_backward_hook(PreBackwardHook hook) { pre_backward_hooks.push_back(std::move(hook)); }
};

struct VariableState {
  using PostAccumulateHook = std::function<void(Variable&)>;
  using BeforeUseHook = std::function<void(VariableState&)>;

  Tensor data;
  Tensor grad;                     // leaves only; accumulated with +=
  bool grad_stale = false;         // grad's values are leftovers: the next accumulation writes it (set_stale_grad)
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;   // null for leaves
  std::string name;                // parameters carry their full name
  std::vector<PostAccumulateHook> post_accumulate_hooks;
  BeforeUseHook before_use;        // run by value(): dist/ gathers a ZeRO-3 parameter here
  // The Variables (handles) on this state. The graph's edges (Node::inputs)
  // do not count: when the last handle goes, a computed state's data is
  // dropped, since no backward rule reads it (a rule that needs a value
  // holds a Variable or the Tensor), and only its shape is kept, for the
  // engine's check of the gradient that comes back. So an op's output that
  // only the graph holds (a projection summed into the residual stream) is
  // freed in forward, not at the end of backward.
  std::atomic<int32_t> handles{0};
  Shape shape_of_dropped;
};

class Variable {
 public:
  Variable() = default;
  explicit Variable(Tensor data, bool requires_grad = false, std::string name = "");
  Variable(const Variable& other) : state_(other.state_) { hold(); }
  Variable(Variable&& other) noexcept = default;  // the handle moves: the count stays
  Variable& operator=(const Variable& other) {
    Variable copy(other);
    std::swap(state_, copy.state_);
    return *this;
  }
  Variable& operator=(Variable&& other) noexcept {
    if (this != &other) {
      let_go();
      state_ = std::move(other.state_);
    }
    return *this;
  }
  ~Variable() { let_go(); }

  bool defined() const { return state_ != nullptr; }
  const Tensor& data() const;
  // What ops read: data() after running the before-use hook, if any. For a
  // ZeRO-3 parameter, data() outside a gather is a sharded placeholder and
  // value() is the whole gathered tensor. Backward rules hold the Variable
  // and call value() again when they run, so nothing keeps a gathered
  // parameter alive between forward and backward. Returned by value (a
  // handle): a later value() of another parameter may release this one's
  // gathered data in the Variable, and the handle keeps what was read valid.
  Tensor value() const;
  // Swaps in data of the same global shape and dtype but any placement: dist/
  // moves a parameter between its gathered values and its placeholder.
  void replace_data(const Tensor& data);
  // Replaces the values in place of the same shape (an optimizer step, a load).
  void set_data(const Tensor& data);
  // Mixed precision: the same parameter in another floating dtype (same
  // global shape, any placement); its gradient, if any, is dropped.
  void retype(const Tensor& data);
  const Tensor& grad() const;  // undefined until a backward pass reaches this leaf
  void set_grad(const Tensor& grad);
  // A gradient buffer whose values are leftovers: the next accumulation
  // writes it instead of adding to it, and grad() zeroes it if it is read
  // before that. ZeRO's flat gradient buffers (dist/shard_group.cpp) use it
  // to skip a zero fill and the read of those zeros, 8 bytes per f32
  // gradient element per step.
  void set_stale_grad(const Tensor& grad);
  void zero_grad();            // drops the gradient (the next accumulation starts fresh)
  bool requires_grad() const;
  bool is_leaf() const { return grad_fn() == nullptr; }
  const std::shared_ptr<Node>& grad_fn() const;
  const std::string& name() const;

  const Shape& shape() const { return data().shape(); }
  int64_t size(int64_t d) const { return data().size(d); }
  int64_t numel() const { return data().numel(); }
  DType dtype() const { return data().dtype(); }
  Device device() const { return data().device(); }

  // Runs the backward pass from this Variable. Without an argument it must
  // hold one element (a loss) and is seeded with 1. retain_graph keeps the
  // saved tensors so backward can run through the same graph again.
  void backward(bool retain_graph = false) const;
  void backward(const Tensor& grad_output, bool retain_graph = false) const;

  void add_post_accumulate_hook(VariableState::PostAccumulateHook hook);

  // The leaves that require grad and that backward() from this Variable
  // would reach, in no particular order. What a data-parallel reducer needs
  // before backward starts (optim/zero.cpp): a parameter this graph never
  // reaches will get no gradient, so it counts as ready at once.
  std::vector<Variable> reachable_leaves() const;

  // The Variable with the same data but no history: gradients stop here.
  Variable detach() const { return Variable(data()); }

  const std::shared_ptr<VariableState>& state() const { return state_; }
  static Variable from_state(std::shared_ptr<VariableState> state);

 private:
  void check_defined(const char* what) const;
  void hold() {
    if (state_) ++state_->handles;
  }
  void let_go() noexcept;
  std::shared_ptr<VariableState> state_;
};

// The backward pass from several outputs at once, each seeded with its
// gradient (PyTorch's torch.autograd.backward(tensors, grad_tensors)): one
// pass, so a state that two of them depend on gets both contributions
// before it is passed on. What activation checkpointing runs for a segment
// with two outputs (autograd/checkpoint.h).
void backward(const std::vector<Variable>& outputs, const std::vector<Tensor>& grad_outputs,
              bool retain_graph = false);

// The same pass, but the gradients that reach the leaves `wrt` are returned
// (one per entry; undefined where none arrived) instead of accumulated into
// their .grad, and their hooks do not run (PyTorch's torch.autograd.grad).
// Other leaves (parameters) accumulate as in backward(). The graph is not
// retained.
std::vector<Tensor> backward_to(const std::vector<Variable>& outputs, const std::vector<Tensor>& grad_outputs,
                                const std::vector<Variable>& wrt);

// Whether ops record history. Off inside a NoGradGuard (evaluation,
// sampling, optimizer updates): ops then return plain Variables.
bool grad_mode_enabled();

// Sets grad mode for its lifetime, then puts back what the caller had.
class GradModeGuard {
 public:
  explicit GradModeGuard(bool enabled);
  ~GradModeGuard();
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool previous_;
};

class NoGradGuard : public GradModeGuard {
 public:
  NoGradGuard() : GradModeGuard(false) {}
};

// Recording on, whatever the caller had (a checkpointed segment's second
// forward, run from inside a backward rule).
class EnableGradGuard : public GradModeGuard {
 public:
  EnableGradGuard() : GradModeGuard(true) {}
};

// For op authors (autograd/functions.cpp): wraps a forward result, recording
// a Node with `backward` when grad mode is on and any input requires grad.
Variable make_result(Tensor result, const char* op, std::vector<Variable> inputs, Node::BackwardFn backward);

// True while a backward rule runs in a pass that drops each rule's saved
// tensors right after it (backward without retain_graph): the rule may then
// overwrite what it saved (linear_cross_entropy writes dlogits over its
// logits). False outside backward and under retain_graph.
bool backward_frees_saved_tensors();

// For a backward rule that can compute an input's gradient straight into
// where it ends up: a linear layer's weight gradient as one GEMM into the
// f32 buffer ZeRO gives each parameter (Megatron's "gradient accumulation
// fusion"), instead of a 16-bit product that is then cast and added. When
// `input` is a leaf that requires grad and holds a contiguous gradient
// buffer in the dtype sums of a `dtype` gradient are kept in (f32, or f64
// for f64), returns it as a Destination: the rule must write it (add false:
// the buffer holds leftovers, set_stale_grad) or add to it (add true)
// before it returns, and returns an undefined gradient for that input; the
// engine still counts the leaf as reached (its post-accumulate hooks run
// when it is complete). Otherwise, and outside a backward rule, returns an
// undefined Destination, and the rule returns the gradient as usual.
Destination claim_leaf_grad(const Variable& input, DType dtype);

}  // namespace sg
