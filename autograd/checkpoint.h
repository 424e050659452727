// Activation checkpointing (Chen et al., "Training Deep Nets with Sublinear
// Memory Cost", 2016; PyTorch's torch.utils.checkpoint, DeepSpeed's
// activation checkpointing): a segment of the network runs in forward
// without recording its ops, so none of its activations are kept, only its
// inputs. When backward reaches it, it runs again from those inputs with
// recording on, and backward goes through that copy. Memory: a GPT keeps
// the residual stream between blocks and one block's activations at a time,
// instead of every block's; time: one more forward of each segment.
//
//   std::vector<Variable> out = checkpoint(
//       [&](const std::vector<Variable>& in) { return block(in); }, {a, b}, block.parameters());
//
// The segment must compute the same values when run again: deterministic
// ops, no randomness (shardgrad's GPT has no dropout), parameters unchanged
// between forward and backward. Its ops then run in the same order on the
// same values, so the gradients are the same bits as without checkpointing
// (tests/autograd/test_checkpoint.cpp, tests/nn/test_gpt.cpp).
//
// `parameters`: the leaves the segment reads that are not among `inputs`.
// Their gradients accumulate in the recompute's backward, which runs their
// hooks (ZeRO's reductions) as a plain backward would; naming them makes
// them reachable from the loss before that (ZeroOptimizer::backward counts
// the parameters a backward will reach). Every output must reach the loss:
// a segment runs its backward once all its outputs' gradients have arrived,
// and a backward that ends with one still waiting is an error.
//
// Read next: autograd/checkpoint.cpp, then Gpt::hidden (nn/gpt.cpp).
#pragma once

#include <functional>
#include <vector>

#include "autograd/variable.h"

namespace sg {

using Segment = std::function<std::vector<Variable>(const std::vector<Variable>& inputs)>;

std::vector<Variable> checkpoint(const Segment& segment, const std::vector<Variable>& inputs,
                                 const std::vector<Variable>& parameters);

// For checkpoint.cpp and the engine: segments that have some of their
// outputs' gradients and wait for the rest (+1 when a segment's first
// arrives, -1 when it runs).
void segments_waiting(int change);

}  // namespace sg
