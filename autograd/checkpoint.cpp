#include "autograd/checkpoint.h"

#include <memory>

#include "kernels/error.h"

namespace sg {
namespace {

// What a checkpointed segment keeps between its forward and its backward:
// its inputs (held, so their values stay) and, as they arrive, its outputs'
// gradients. Shared by the nodes of its outputs, one node each (a Node has
// one output); the last to receive its gradient runs the segment again.
struct SavedSegment {
  Segment segment;
  std::vector<Variable> inputs;
  std::vector<Tensor> output_grads;  // by output, undefined until it arrives
  size_t outputs = 0;                // those with a node: the gradients to wait for
  size_t arrived = 0;
  size_t edges = 0;  // inputs and parameters: the length of each rule's result
};

// The second forward, from leaves holding the inputs' values, recorded this
// time, then a backward from its outputs seeded with their gradients. The
// parameters' gradients accumulate in that pass (their hooks run there);
// the inputs' come back to be passed on by the outer pass.
std::vector<Tensor> run_again(SavedSegment& saved) {
  std::vector<Variable> fresh, wrt;
  std::vector<size_t> wrt_index;
  for (size_t i = 0; i < saved.inputs.size(); ++i) {
    const Variable& input = saved.inputs[i];
    fresh.emplace_back(input.value(), input.requires_grad());
    if (input.requires_grad()) wrt.push_back(fresh.back()), wrt_index.push_back(i);
  }
  std::vector<Variable> outputs;
  {
    EnableGradGuard recording;
    outputs = saved.segment(fresh);
  }
  SG_CHECK(outputs.size() == saved.output_grads.size(), "checkpoint: the segment returned ", outputs.size(),
           " outputs when run again and ", saved.output_grads.size(), " the first time: it must compute the same");
  std::vector<Variable> roots;
  std::vector<Tensor> seeds;
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (!saved.output_grads[i].defined()) continue;
    SG_CHECK(outputs[i].requires_grad(), "checkpoint: output ", i, " needed a gradient the first time and none when ",
             "run again: the segment must compute the same");
    roots.push_back(outputs[i]);
    seeds.push_back(saved.output_grads[i]);
  }
  std::vector<Tensor> result(saved.edges);
  std::vector<Tensor> grads = backward_to(roots, seeds, wrt);
  for (size_t k = 0; k < wrt.size(); ++k) result[wrt_index[k]] = grads[k];
  return result;
}

}  // namespace

std::vector<Variable> checkpoint(const Segment& segment, const std::vector<Variable>& inputs,
                                 const std::vector<Variable>& parameters) {
  bool needs_grad = false;
  for (const Variable& v : inputs) needs_grad |= v.requires_grad();
  for (const Variable& v : parameters) needs_grad |= v.requires_grad();
  if (!grad_mode_enabled() || !needs_grad) return segment(inputs);  // nothing to differentiate: nothing to save
  std::vector<Variable> values;
  {
    NoGradGuard not_recording;  // the segment's activations are freed as it goes
    values = segment(inputs);
  }
  auto saved = std::make_shared<SavedSegment>();
  saved->segment = segment;
  saved->inputs = inputs;
  saved->output_grads.resize(values.size());
  saved->edges = inputs.size() + parameters.size();
  std::vector<Variable> edges = inputs;
  edges.insert(edges.end(), parameters.begin(), parameters.end());
  std::vector<Variable> outputs;
  for (size_t i = 0; i < values.size(); ++i) {
    if (!is_floating(values[i].dtype())) {
      outputs.push_back(values[i]);  // no gradient to wait for
      continue;
    }
    ++saved->outputs;
    // Each output's rule stores its gradient; the last to arrive runs the
    // segment again and returns the inputs' gradients (the others return
    // none). The engine reaches every output's node before the inputs'.
    outputs.push_back(make_result(values[i].data(), "checkpoint", edges, [saved, i](const Tensor& dy) {
      SavedSegment& s = *saved;
      s.output_grads[i] = dy;
      ++s.arrived;
      if (s.arrived < s.outputs) {
        if (s.arrived == 1) segments_waiting(+1);
        return std::vector<Tensor>(s.edges);
      }
      if (s.outputs > 1) segments_waiting(-1);
      std::vector<Tensor> result = run_again(s);
      s.arrived = 0;  // a retained graph may run backward again
      s.output_grads.assign(s.output_grads.size(), Tensor());
      return result;
    }));
  }
  return outputs;
}

}  // namespace sg
