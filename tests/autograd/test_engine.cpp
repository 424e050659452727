// The backward engine: accumulation, shared inputs, grad mode, graph
// retention, the two hook seams and the errors a user meets.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/functions.h"
#include "tensor/ops.h"

namespace sg {
namespace {

Variable leaf(std::vector<float> values, const Shape& shape) {
  return Variable(Tensor::from_vector(values, shape), /*requires_grad=*/true);
}

TEST(Engine, GradientsAccumulateAcrossBackwardCalls) {
  Variable x = leaf({1, 2, 3}, {3});
  sum(scale(x, 2.0)).backward();
  sum(scale(x, 2.0)).backward();
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{4, 4, 4}));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Engine, AnInputUsedTwiceGetsTheSumOfBothGradients) {
  Variable x = leaf({3}, {1});
  Variable y = mul(x, x);  // y = x^2, dy/dx = 2x through two edges
  Variable z = add(y, x);  // z = x^2 + x: x also feeds z directly
  z.backward();
  EXPECT_EQ(x.grad().item(), 7.0);
}

TEST(Engine, SharedGradientTensorsAreNotAliasedIntoTwoLeaves) {
  Variable a = leaf({1}, {1}), b = leaf({1}, {1});
  add(a, b).backward();  // add hands the same dy to both inputs
  add(a, b).backward();
  EXPECT_EQ(a.grad().item(), 2.0);
  EXPECT_EQ(b.grad().item(), 2.0);
}

TEST(Engine, NoGradGuardRecordsNothing) {
  Variable x = leaf({1, 2}, {2});
  {
    NoGradGuard no_grad;
    Variable y = scale(x, 3.0);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_TRUE(y.is_leaf());
    EXPECT_THROW(sum(y).backward(), Error);
  }
  EXPECT_TRUE(scale(x, 3.0).requires_grad());
}

TEST(Engine, FrozenInputsGetNoGradient) {
  Variable w = leaf({2}, {1});
  Variable frozen(Tensor::from_vector(std::vector<float>{5}, {1}));  // requires_grad = false
  mul(w, frozen).backward();
  EXPECT_EQ(w.grad().item(), 5.0);
  EXPECT_FALSE(frozen.grad().defined());
}

TEST(Engine, ReachableLeavesAreTheOnesBackwardWouldReach) {
  Variable a = leaf({1}, {1}), b = leaf({2}, {1}), unused = leaf({3}, {1});
  Variable frozen(Tensor::from_vector(std::vector<float>{4}, {1}));
  Variable side = mul(unused, b);  // computed, but the loss below never uses it
  Variable loss = add(mul(a, b), mul(b, frozen));
  std::vector<Variable> leaves = loss.reachable_leaves();
  auto reached = [&](const Variable& v) {
    for (const Variable& l : leaves)
      if (l.state() == v.state()) return true;
    return false;
  };
  EXPECT_EQ(leaves.size(), 2u);  // b once, though two paths lead to it; frozen does not require grad
  EXPECT_TRUE(reached(a));
  EXPECT_TRUE(reached(b));
  EXPECT_FALSE(reached(unused));
  EXPECT_EQ(side.reachable_leaves().size(), 2u);
  EXPECT_TRUE(Variable(Tensor::from_vector(std::vector<float>{1}, {1})).reachable_leaves().empty());
  loss.backward();  // and backward agrees
  EXPECT_TRUE(a.grad().defined() && b.grad().defined());
  EXPECT_FALSE(unused.grad().defined());
}

// A stale gradient buffer (Variable::set_stale_grad): the first
// accumulation writes it, converting a 16-bit gradient; the next adds; read
// before any backward, it is zero.
TEST(Engine, AStaleGradientIsWrittenThenAddedTo) {
  Variable x = leaf({1, 2}, {2});
  const float nan = std::nanf("");
  Tensor buffer = Tensor::from_vector(std::vector<float>{nan, nan}, {2});
  x.set_stale_grad(buffer);
  sum(scale(x, 3.0)).backward();
  EXPECT_EQ(buffer.to_vector<float>(), (std::vector<float>{3, 3}));  // written in place, not replaced
  sum(scale(x, 3.0)).backward();
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{6, 6}));

  Variable y = leaf({1, 2}, {2});
  y.set_stale_grad(Tensor::from_vector(std::vector<float>{nan, nan}, {2}));
  EXPECT_EQ(y.grad().to_vector<float>(), (std::vector<float>{0, 0}));  // read before any backward: zero

  Variable h(Tensor::from_vector(std::vector<float>{1, 2}, {2}).to(DType::bf16), true);
  Tensor f32 = Tensor::from_vector(std::vector<float>{nan, nan}, {2});
  h.set_stale_grad(f32);
  sum(scale(h, 0.5)).backward();  // a bf16 gradient into the f32 buffer
  EXPECT_EQ(f32.to_vector<float>(), (std::vector<float>{0.5f, 0.5f}));
  EXPECT_THROW(h.set_stale_grad(Tensor()), Error);
}

TEST(Engine, SavedTensorsAreFreedUnlessTheGraphIsRetained) {
  Variable x = leaf({1, 2}, {2});
  Variable loss = sum(mul(x, x));
  loss.backward(/*retain_graph=*/true);
  loss.backward();
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{4, 8}));
  try {
    loss.backward();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("retain_graph"), std::string::npos) << e.what();
  }
}

// An op's output lives while a Variable holds it: the caller's, or one a
// backward rule captured because it reads the value. The graph's edges do
// not hold it. So an output no rule reads (scale's) is freed in forward, and
// one a rule reads (gelu's input) goes once that rule has run in backward:
// the early layers' backward does not run beside all the later layers'
// activations. An output the caller still holds keeps its values.
TEST(Engine, AnOutputLivesWhileAVariableHoldsIt) {
  constexpr int64_t kOps = 8, kBytes = 1000 * 4;
  auto live = [] { return memory_stats(Device::cpu())[MemoryCategory::activation].live; };
  for (const bool read_by_rules : {false, true}) {
    SCOPED_TRACE(read_by_rules ? "gelu: each output read by the next rule" : "scale: no rule reads its input");
    Variable x = leaf(std::vector<float>(1000, 1.0f), {1000});
    const int64_t before = live();
    Variable y = x, kept;
    for (int i = 0; i < kOps; ++i) {
      y = read_by_rules ? gelu(y) : scale(y, 1.5);
      if (i == 2) kept = y;
    }
    Variable loss = sum(y);
    y = Variable();
    // After forward: every output that the next rule reads, or, with
    // scale, only the one the caller kept (sum's rule reads only a shape),
    // and the loss.
    const int64_t after_forward = live() - before;
    if (read_by_rules) EXPECT_GE(after_forward, (kOps - 1) * kBytes);  // the last one only sum reads
    else EXPECT_LE(after_forward, kBytes + 64);
    int64_t at_the_leaf = -1;
    x.add_post_accumulate_hook([&](Variable&) { at_the_leaf = live() - before; });
    loss.backward();
    // Left at the leaf: the output still held (kept), the gradient passed to
    // x, and the loss and its seed; not the eight outputs.
    EXPECT_GE(at_the_leaf, 0);
    EXPECT_LE(at_the_leaf, 2 * kBytes + 64);
    EXPECT_EQ(kept.data().numel(), 1000);
    if (!read_by_rules) {
      EXPECT_EQ(kept.data().to_vector<float>(), std::vector<float>(1000, 1.5f * 1.5f * 1.5f));
      EXPECT_EQ(x.grad().to_vector<float>()[0], float(std::pow(1.5, kOps)));
    }
    EXPECT_THROW(loss.backward(), Error);  // the graph is spent: a clear error, as before
  }
}

// y = 2 x, whose rule writes dx into x's buffer itself when it may
// (claim_leaf_grad); *wrote says whether it did. `target`: the leaf to
// claim instead of x; `fail`: throw after the claim.
Variable doubled(const Variable& x, bool* wrote, const Variable& target = Variable(), bool fail = false) {
  const Variable claimed = target.defined() ? target : x;
  return make_result(sg::scale(x.value(), 2.0), "doubled", {x}, [claimed, wrote, fail](const Tensor& dy) {
    const Tensor dx = sg::scale(dy, 2.0);
    const Destination into = claim_leaf_grad(claimed, dx.dtype());
    *wrote = into.defined();
    SG_CHECK(!fail, "doubled: failing after the claim, as asked");
    if (!into.defined()) return std::vector<Tensor>{dx};
    Tensor buffer = into.tensor;
    if (into.add) axpy_(buffer, 1.0, dx);
    else buffer.copy_(dx);
    return std::vector<Tensor>{Tensor()};
  });
}

// A rule that writes a leaf's gradient into its buffer: the buffer is
// written while stale, then added to; the leaf still counts as reached
// (its hook runs once per backward, after every consumer), and another
// consumer's gradient joins it.
TEST(Engine, ARuleMayWriteALeafsGradientIntoItsBuffer) {
  const float nan = std::nanf("");
  Variable x = leaf({1, 2}, {2});
  Tensor buffer = Tensor::from_vector(std::vector<float>{nan, nan}, {2});
  x.set_stale_grad(buffer);
  int calls = 0;
  std::vector<float> seen;
  x.add_post_accumulate_hook([&](Variable& v) { ++calls, seen = v.grad().to_vector<float>(); });
  bool wrote = false;
  sum(doubled(x, &wrote)).backward();
  EXPECT_TRUE(wrote);
  EXPECT_EQ(buffer.to_vector<float>(), (std::vector<float>{2, 2}));  // the NaNs were never read
  EXPECT_EQ(calls, 1);
  sum(add(doubled(x, &wrote), scale(x, 3.0))).backward();  // added to, with another consumer's part
  EXPECT_EQ(buffer.to_vector<float>(), (std::vector<float>{7, 7}));
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(seen, (std::vector<float>{7, 7})) << "the hook runs once the leaf is complete";

  // A bf16 leaf's gradient goes into its f32 buffer unrounded.
  Variable h(Tensor::from_vector(std::vector<float>{1, 2}, {2}).to(DType::bf16), true);
  Tensor f32 = Tensor::from_vector(std::vector<float>{nan, nan}, {2});
  h.set_stale_grad(f32);
  sum(doubled(h, &wrote)).backward();
  EXPECT_TRUE(wrote);
  EXPECT_EQ(f32.to_vector<float>(), (std::vector<float>{2, 2}));

  // No buffer, a non-leaf, or a buffer not in f32: the rule returns the gradient instead.
  Variable plain = leaf({1, 2}, {2});
  sum(doubled(plain, &wrote)).backward();
  EXPECT_FALSE(wrote);
  EXPECT_EQ(plain.grad().to_vector<float>(), (std::vector<float>{2, 2}));
  Variable computed = scale(plain, 1.0);
  sum(doubled(computed, &wrote)).backward();
  EXPECT_FALSE(wrote);
  Variable wide = leaf({1, 2}, {2});
  wide.set_stale_grad(Tensor::zeros({2}, TensorOptions().dtype(DType::bf16)));
  sum(doubled(wide, &wrote)).backward();
  EXPECT_FALSE(wrote) << "sums are not written into a bf16 buffer";
  EXPECT_EQ(wide.grad().to_vector<float>(), (std::vector<float>{2, 2}));
  // Outside a backward rule there is nowhere to report the write.
  EXPECT_FALSE(claim_leaf_grad(x, DType::f32).defined());
  // A rule may only claim its own inputs' gradients.
  Variable other = leaf({1, 2}, {2});
  other.set_stale_grad(Tensor::zeros({2}));
  EXPECT_THROW(sum(doubled(x, &wrote, other)).backward(), Error);
  // A rule that fails after its claim leaves the buffer stale: read, it is zero.
  Variable y = leaf({1, 2}, {2});
  y.set_stale_grad(Tensor::from_vector(std::vector<float>{nan, nan}, {2}));
  EXPECT_THROW(sum(doubled(y, &wrote, Variable(), /*fail=*/true)).backward(), Error);
  EXPECT_EQ(y.grad().to_vector<float>(), (std::vector<float>{0, 0}));
}

TEST(Engine, PreBackwardHooksRunBeforeTheirNodeInReverseOrder) {
  Variable x = leaf({1, 2}, {2});
  Variable a = scale(x, 2.0);
  Variable b = gelu(a);
  std::vector<std::string> seen;
  a.grad_fn()->add_pre_backward_hook([&](Node& node) { seen.push_back(node.name); });
  b.grad_fn()->add_pre_backward_hook([&](Node& node) { seen.push_back(node.name); });
  sum(b).backward();
  EXPECT_EQ(seen, (std::vector<std::string>{"gelu", "scale"}));
  EXPECT_LT(a.grad_fn()->sequence, b.grad_fn()->sequence);
}

TEST(Engine, PostAccumulateHooksSeeTheAccumulatedGradient) {
  Variable w = leaf({1, 1}, {2});
  std::vector<float> observed;
  int calls = 0;
  w.add_post_accumulate_hook([&](Variable& v) {
    ++calls;
    observed = v.grad().to_vector<float>();
  });
  Variable y = add(scale(w, 2.0), scale(w, 3.0));  // two uses, one accumulation per backward
  sum(y).backward();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(observed, (std::vector<float>{5, 5}));
  EXPECT_THROW(y.add_post_accumulate_hook([](Variable&) {}), Error);  // not a leaf
}

TEST(Engine, LeafGradientsAreCountedAsGradientMemory) {
  Variable w = leaf(std::vector<float>(100, 1.0f), {100});
  int64_t before = memory_stats(Device::cpu())[MemoryCategory::gradient].live;
  sum(w).backward();
  EXPECT_EQ(memory_stats(Device::cpu())[MemoryCategory::gradient].live - before, 400);
}

TEST(Engine, ClearErrorsForMisuse) {
  Variable x = leaf({1, 2}, {2});
  EXPECT_THROW(scale(x, 2.0).backward(), Error);  // not a scalar, no gradient given
  EXPECT_THROW(scale(x, 2.0).backward(Tensor::ones({3})), Error);  // wrong gradient shape
  EXPECT_THROW(Variable(Tensor::zeros({2}, TensorOptions().dtype(DType::i32)), true), Error);
  EXPECT_THROW(Variable().data(), Error);
}

TEST(Engine, DeepChainsDoNotOverflowTheStack) {
  Variable x = leaf({1}, {1});
  Variable y = x;
  for (int i = 0; i < 20000; ++i) y = scale(y, 1.0);
  y.backward();
  EXPECT_EQ(x.grad().item(), 1.0);
}

}  // namespace
}  // namespace sg
