// Activation checkpointing (autograd/checkpoint.h): the same gradients to
// the bit as the plain graph, fewer activations kept, parameters' hooks run
// once, and an output that never gets a gradient is an error, not a
// silently missing gradient.
#include <gtest/gtest.h>

#include <functional>
#include <vector>

#include "autograd/checkpoint.h"
#include "autograd/functions.h"
#include "tensor/ops.h"
#include "tensor/rng.h"

namespace sg {
namespace {

Variable random_leaf(const Shape& shape, uint64_t seed) {
  Tensor t = Tensor::empty(shape);
  fill_normal_(t, seed, "checkpoint-test", 0.0, 1.0);
  return Variable(t, /*requires_grad=*/true);
}

// Two inputs, two outputs, two parameters, and values that rules read
// (linear's input, GELU's input): what a GPT block is to the residual stream.
std::vector<Variable> segment(const std::vector<Variable>& in, const Variable& w, const Variable& bias) {
  Variable h = linear_gelu(add(in[0], in[1]), w, bias);  // (8, 16)
  Variable out_a = add(in[0], scale(mul(h, h), 0.5));
  Variable out_b = gelu(mul(out_a, in[1]));
  return {out_a, out_b};
}

struct Outcome {
  std::vector<float> loss, da, db, dw, dbias;
  int64_t activations_after_forward = 0;
  int weight_hooks = 0;
};

Outcome train_once(bool checkpointed) {
  Variable a = random_leaf({8, 16}, 1), b = random_leaf({8, 16}, 2);
  Variable w = random_leaf({16, 16}, 3), bias = random_leaf({16}, 4);
  Outcome r;
  w.add_post_accumulate_hook([&r](Variable&) { ++r.weight_hooks; });
  auto live = [] { return memory_stats(Device::cpu())[MemoryCategory::activation].live; };
  const int64_t before = live();
  Variable loss;
  {
    auto body = [&](const std::vector<Variable>& in) { return segment(in, w, bias); };
    std::vector<Variable> out = checkpointed ? checkpoint(body, {a, b}, {w, bias}) : body({a, b});
    loss = add(sum(out[0]), sum(mul(out[1], out[1])));
  }
  r.activations_after_forward = live() - before;
  loss.backward();
  r.loss = loss.data().to_vector<float>();
  r.da = a.grad().to_vector<float>(), r.db = b.grad().to_vector<float>();
  r.dw = w.grad().to_vector<float>(), r.dbias = bias.grad().to_vector<float>();
  return r;
}

TEST(Checkpoint, SameGradientsToTheBitAndFewerActivations) {
  const Outcome plain = train_once(false), checkpointed = train_once(true);
  EXPECT_EQ(checkpointed.loss, plain.loss);
  EXPECT_EQ(checkpointed.da, plain.da);
  EXPECT_EQ(checkpointed.db, plain.db);
  EXPECT_EQ(checkpointed.dw, plain.dw);
  EXPECT_EQ(checkpointed.dbias, plain.dbias);
  EXPECT_EQ(checkpointed.weight_hooks, 1);  // in the recompute's backward, once
  EXPECT_EQ(plain.weight_hooks, 1);
  // Kept after forward: the two outputs (and what the loss's ops read), not
  // h, its square, the sum of the inputs or the second product.
  EXPECT_LT(checkpointed.activations_after_forward, plain.activations_after_forward);
  EXPECT_LE(checkpointed.activations_after_forward, 3 * 8 * 16 * 4 + 64);
}

TEST(Checkpoint, WithoutRecordingItIsThePlainSegment) {
  Variable a = random_leaf({4}, 5);
  NoGradGuard no_grad;
  std::vector<Variable> out = checkpoint([](const std::vector<Variable>& in) { return std::vector{scale(in[0], 2.0)}; },
                                         {a}, {});
  EXPECT_FALSE(out[0].requires_grad());
  EXPECT_EQ(out[0].data().to_vector<float>()[0], 2 * a.data().to_vector<float>()[0]);
}

TEST(Checkpoint, AnOutputThatGetsNoGradientIsAnError) {
  Variable a = random_leaf({4}, 6);
  std::vector<Variable> out = checkpoint(
      [](const std::vector<Variable>& in) { return std::vector{scale(in[0], 2.0), scale(in[0], 3.0)}; }, {a}, {});
  Variable loss = sum(out[0]);  // out[1] never reaches the loss
  try {
    loss.backward();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("every output of a checkpoint() must reach the loss"), std::string::npos)
        << e.what();
  }
  // The count does not outlive the failed pass: a good one after it works.
  Variable b = random_leaf({4}, 7);
  std::vector<Variable> ok = checkpoint([](const std::vector<Variable>& in) { return std::vector{scale(in[0], 2.0)}; },
                                        {b}, {});
  sum(ok[0]).backward();
  EXPECT_EQ(b.grad().to_vector<float>(), std::vector<float>(4, 2.0f));
}

}  // namespace
}  // namespace sg
