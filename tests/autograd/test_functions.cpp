// Every differentiable op's gradient against f64 central finite differences:
// for L = sum(f(inputs) * w) with a random w, the gradient the engine puts in
// each input's .grad must match (L(x + h) - L(x - h)) / 2h, element by element.
#include <gtest/gtest.h>

#include <functional>

#include "autograd/functions.h"
#include "tensor/ops.h"
#include "tensor/rng.h"
#include "tests/test_util.h"

namespace sg {
namespace {

using Fn = std::function<Variable(const std::vector<Variable>&)>;

Tensor randn64(const Shape& shape, const std::string& name, double std = 1.0) {
  Tensor t = Tensor::empty(shape);
  fill_normal_(t, 5, name, 0.0, std);
  return t.to(DType::f64);
}

double weighted_sum(const Fn& f, const std::vector<Tensor>& inputs, const Tensor& weights) {
  NoGradGuard no_grad;
  std::vector<Variable> vars;
  for (const Tensor& t : inputs) vars.emplace_back(t);
  return sg::sum(sg::mul(f(vars).data(), weights)).item();
}

void check_gradients(const Fn& f, std::vector<Tensor> inputs, double rtol = 1e-6, double atol = 1e-8) {
  std::vector<Variable> vars;
  for (const Tensor& t : inputs) vars.emplace_back(t.clone(), /*requires_grad=*/true);
  Variable out = f(vars);
  Tensor weights = randn64(out.shape(), "upstream");
  sum(mul(out, Variable(weights))).backward();
  const double h = 1e-6;
  for (size_t i = 0; i < inputs.size(); ++i) {
    ASSERT_TRUE(vars[i].grad().defined()) << "input " << i << " got no gradient";
    double* values = inputs[i].data<double>();
    std::vector<double> numeric(size_t(inputs[i].numel()));
    for (int64_t j = 0; j < inputs[i].numel(); ++j) {
      double saved = values[j];
      values[j] = saved + h;
      double plus = weighted_sum(f, inputs, weights);
      values[j] = saved - h;
      double minus = weighted_sum(f, inputs, weights);
      values[j] = saved;
      numeric[size_t(j)] = (plus - minus) / (2 * h);
    }
    EXPECT_TRUE(test::all_close(vars[i].grad().to_vector<double>(), numeric, rtol, atol)) << "input " << i;
  }
}

TEST(AutogradFunctions, AddMulScaleReshape) {
  check_gradients([](auto& v) { return add(v[0], v[1]); }, {randn64({3, 4}, "a"), randn64({3, 4}, "b")});
  check_gradients([](auto& v) { return mul(v[0], v[1]); }, {randn64({3, 4}, "a"), randn64({3, 4}, "b")});
  check_gradients([](auto& v) { return scale(v[0], -1.5); }, {randn64({5}, "a")});
  check_gradients([](auto& v) { return reshape(v[0], {2, 6}); }, {randn64({3, 4}, "a")});
}

TEST(AutogradFunctions, MatmulPlainFoldedAndBatched) {
  check_gradients([](auto& v) { return matmul(v[0], v[1]); }, {randn64({4, 3}, "a"), randn64({3, 5}, "b")});
  check_gradients([](auto& v) { return matmul(v[0], v[1]); }, {randn64({2, 4, 3}, "a"), randn64({3, 5}, "b")});
  check_gradients([](auto& v) { return matmul(v[0], v[1]); }, {randn64({2, 4, 3}, "a"), randn64({2, 3, 5}, "b")});
}

TEST(AutogradFunctions, LinearWithAndWithoutBias) {
  check_gradients([](auto& v) { return linear(v[0], v[1], v[2]); },
                  {randn64({2, 3, 4}, "x"), randn64({5, 4}, "w"), randn64({5}, "b")});
  check_gradients([](auto& v) { return linear(v[0], v[1], Variable()); }, {randn64({3, 4}, "x"), randn64({2, 4}, "w")});
}

// f64 checks the composition's backward; f32 takes the fused CPU kernels and
// must equal linear then gelu.
TEST(AutogradFunctions, LinearGeluFusedMatchesLinearThenGelu) {
  check_gradients([](auto& v) { return linear_gelu(v[0], v[1], v[2]); },
                  {randn64({3, 4}, "x", 2.0), randn64({5, 4}, "w"), randn64({5}, "b")});
  auto run = [](bool fused, std::vector<std::vector<float>>& grads) {
    Tensor xs = Tensor::empty({6, 8}), ws = Tensor::empty({16, 8}), bs = Tensor::empty({16});
    fill_normal_(xs, 1, "x", 0.0, 2.0), fill_normal_(ws, 1, "w"), fill_normal_(bs, 1, "b");
    Variable x(xs, true), w(ws, true), b(bs, true);
    Variable y = fused ? linear_gelu(x, w, b) : gelu(linear(x, w, b));
    sum(mul(y, y)).backward();
    grads = {x.grad().to_vector<float>(), w.grad().to_vector<float>(), b.grad().to_vector<float>()};
    return y.data().to_vector<float>();
  };
  std::vector<std::vector<float>> fused_grads, plain_grads;
  EXPECT_TRUE(test::all_close(run(true, fused_grads), run(false, plain_grads), 1e-6, 1e-7));
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(test::all_close(fused_grads[i], plain_grads[i], 1e-5, 1e-6)) << i;
}

// The MLP as one node: f64 against finite differences, and in f32 the
// same bits as its two nodes (the same ops in the same order, on the CPU).
TEST(AutogradFunctions, MlpNodeIsLinearGeluThenLinear) {
  check_gradients([](auto& v) { return mlp(v[0], v[1], v[2], v[3], v[4]); },
                  {randn64({2, 3, 4}, "x", 2.0), randn64({8, 4}, "w1"), randn64({8}, "b1"), randn64({5, 8}, "w2"),
                   randn64({5}, "b2")});
  auto run = [](bool one_node, std::vector<std::vector<float>>& grads) {
    std::vector<Variable> v;
    for (auto [shape, name] : std::vector<std::pair<Shape, const char*>>{
             {{6, 8}, "x"}, {{32, 8}, "w1"}, {{32}, "b1"}, {{8, 32}, "w2"}, {{8}, "b2"}}) {
      Tensor t = Tensor::empty(shape);
      fill_normal_(t, 1, name);
      v.emplace_back(t, true);
    }
    Variable y = one_node ? mlp(v[0], v[1], v[2], v[3], v[4]) : linear(linear_gelu(v[0], v[1], v[2]), v[3], v[4]);
    sum(mul(y, y)).backward();
    grads.clear();
    for (const Variable& input : v) grads.push_back(input.grad().to_vector<float>());
    return y.data().to_vector<float>();
  };
  std::vector<std::vector<float>> node_grads, composed_grads;
  EXPECT_EQ(run(true, node_grads), run(false, composed_grads));
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(node_grads[i], composed_grads[i]) << "input " << i;
  const Variable x(Tensor::zeros({2, 4}), true), w(Tensor::zeros({8, 4}), true), w2(Tensor::zeros({4, 8}), true);
  EXPECT_THROW(mlp(x, w, Variable(), w2, Variable(Tensor::zeros({4}), true)), Error);  // biases required
}

TEST(AutogradFunctions, GeluSoftmaxLayerNorm) {
  check_gradients([](auto& v) { return gelu(v[0]); }, {randn64({11}, "x", 2.0)});
  check_gradients([](auto& v) { return softmax(v[0]); }, {randn64({3, 5}, "x", 2.0)});
  check_gradients([](auto& v) { return layernorm(v[0], v[1], v[2]); },
                  {randn64({2, 3, 6}, "x", 2.0), randn64({6}, "w"), randn64({6}, "b")}, 1e-5, 1e-7);
}

// x reaches the output through the LayerNorm and through another op.
// Whichever backward runs second takes the first one's gradient in: a
// LayerNorm running second adds it in its own pass (Node::backward_adding).
// Both orders.
TEST(AutogradFunctions, LayerNormWhoseInputHasAnotherConsumer) {
  const std::vector<Tensor> inputs = {randn64({2, 3, 6}, "x", 2.0), randn64({6}, "w"), randn64({6}, "b")};
  check_gradients([](auto& v) { return add(scale(v[0], 0.5), layernorm(v[0], v[1], v[2])); }, inputs, 1e-5, 1e-7);
  check_gradients([](auto& v) { return add(layernorm(v[0], v[1], v[2]), scale(v[0], 0.5)); }, inputs, 1e-5, 1e-7);
}

// Both outputs of the fused residual add + LayerNorm carry gradient back.
TEST(AutogradFunctions, AddLayerNorm) {
  check_gradients(
      [](auto& v) {
        auto [sum, norm] = add_layernorm(v[0], v[1], v[2], v[3]);
        return add(sum, mul(norm, norm));
      },
      {randn64({2, 3, 6}, "x", 2.0), randn64({2, 3, 6}, "y"), randn64({6}, "w"), randn64({6}, "b")}, 1e-5, 1e-7);
}

TEST(AutogradFunctions, Attention) {
  check_gradients([](auto& v) { return attention(v[0], 2); }, {randn64({2, 3, 3 * 4}, "qkv")}, 1e-5, 1e-7);
  check_gradients([](auto& v) { return fused_attention(v[0], 2); }, {randn64({2, 3, 3 * 4}, "qkv")}, 1e-5, 1e-7);
  check_gradients([](auto& v) { return gemm_attention(v[0], 2); }, {randn64({2, 3, 3 * 4}, "qkv")}, 1e-5, 1e-7);
}

TEST(AutogradFunctions, EmbeddingAndCrossEntropy) {
  Tensor ids = Tensor::from_vector(std::vector<int32_t>{2, 0, 2, 3}, {2, 2});
  check_gradients([&](auto& v) { return embedding(v[0], ids); }, {randn64({4, 3}, "table")});
  Tensor targets = Tensor::from_vector(std::vector<int64_t>{1, -1, 4, 0}, {2, 2});
  check_gradients([&](auto& v) { return cross_entropy(v[0], targets); }, {randn64({2, 2, 5}, "logits", 2.0)});
}

TEST(AutogradFunctions, SumAndMean) {
  check_gradients([](auto& v) { return sum(v[0]); }, {randn64({3, 2}, "x")});
  check_gradients([](auto& v) { return mean(v[0]); }, {randn64({3, 2}, "x")});
}

TEST(AutogradFunctions, CrossEntropyIsTheMeanOverCountedRows) {
  Tensor logits = Tensor::zeros({3, 4});
  Tensor targets = Tensor::from_vector(std::vector<int32_t>{0, -1, 3}, {3});
  EXPECT_NEAR(cross_entropy(Variable(logits), targets).data().item(), std::log(4.0), 1e-6);
  EXPECT_THROW(cross_entropy(Variable(logits), Tensor::full({3}, -1, TensorOptions().dtype(DType::i32))), Error);
}

TEST(AutogradFunctions, LinearCrossEntropy) {
  Tensor targets = Tensor::from_vector(std::vector<int64_t>{1, -1, 4, 0, 2, 3}, {2, 3});
  check_gradients([&](auto& v) { return linear_cross_entropy(v[0], v[1], targets); },
                  {randn64({2, 3, 4}, "x"), randn64({5, 4}, "w")});
}

// Two chunks of 4 and 2 rows, an ignored target in the first.
TEST(AutogradFunctions, ChunkedLinearCrossEntropy) {
  Tensor targets = Tensor::from_vector(std::vector<int64_t>{1, -1, 4, 0, 2, 3}, {2, 3});
  check_gradients([&](auto& v) { return chunked_linear_cross_entropy(v[0], v[1], targets, 4); },
                  {randn64({2, 3, 4}, "x"), randn64({5, 4}, "w")});
}

// The chunked head gives the whole head's loss and gradients (to rounding:
// its 1/n comes after the products) and never holds more than a chunk of
// logits: its forward's peak and what it keeps for backward are a fraction
// of the (N, V) logits the whole head keeps. A second backward through a
// retained graph gives the same gradients again.
TEST(AutogradFunctions, ChunkedLinearCrossEntropyHoldsAChunkOfLogits) {
  const int64_t N = 64, C = 8, V = 1000, chunk = 16;
  Tensor x0 = randn64({N, C}, "x").to(DType::f32), w0 = randn64({V, C}, "w").to(DType::f32);
  std::vector<int32_t> labels(static_cast<size_t>(N));
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = i % 9 == 4 ? -1 : int32_t((i * 37) % V);
  Tensor targets = Tensor::from_vector(labels, {N});
  const int64_t logits_bytes = N * V * 4;
  auto live = [] { return memory_stats(Device::cpu())[MemoryCategory::activation].live; };
  auto run = [&](int64_t rows, int64_t* forward_peak, int64_t* kept) {
    Variable x(x0.clone(), true), w(w0.clone(), true);
    const int64_t before = live();
    reset_peak_memory(Device::cpu());
    Variable loss = chunked_linear_cross_entropy(x, w, targets, rows);
    *forward_peak = memory_stats(Device::cpu())[MemoryCategory::activation].peak - before;
    *kept = live() - before;
    loss.backward(/*retain_graph=*/true);
    std::vector<std::vector<float>> result{{float(loss.data().item())}, x.grad().to_vector<float>(),
                                           w.grad().to_vector<float>()};
    x.zero_grad(), w.zero_grad();
    loss.backward();
    EXPECT_EQ(x.grad().to_vector<float>(), result[1]) << "a second backward through the retained graph";
    return result;
  };
  int64_t whole_peak = 0, whole_kept = 0, chunked_peak = 0, chunked_kept = 0;
  const auto whole = run(0, &whole_peak, &whole_kept), chunked = run(chunk, &chunked_peak, &chunked_kept);
  EXPECT_NEAR(chunked[0][0], whole[0][0], 1e-6);
  for (size_t i = 1; i < 3; ++i) EXPECT_TRUE(test::all_close(chunked[i], whole[i], 1e-5, 1e-7)) << "gradient " << i;
  EXPECT_GE(whole_kept, logits_bytes);
  EXPECT_LT(chunked_kept, logits_bytes / 4) << "dx (N, C) and dW's (V, C) sums, not the logits";
  EXPECT_LT(chunked_peak, logits_bytes / 2) << "a chunk of logits at a time";
  EXPECT_THROW(chunked_linear_cross_entropy(Variable(x0), Variable(w0), targets.slice(0, 0, 8), chunk), Error);
}

// The fused head gives cross_entropy(linear(x, w))'s loss and gradients, bit
// for bit, and its backward writes dlogits over the logits it owns: the
// unfused backward holds a second (N, V) buffer at its peak, the fused one
// does not. Under retain_graph the logits stay intact for a second pass.
TEST(AutogradFunctions, LinearCrossEntropyOverwritesItsLogits) {
  const int64_t N = 64, C = 8, V = 1000;
  Tensor x0 = randn64({N, C}, "x").to(DType::f32), w0 = randn64({V, C}, "w").to(DType::f32);
  Tensor targets = Tensor::from_vector(std::vector<int32_t>(size_t(N), 7), {N});
  const int64_t logits_bytes = N * V * 4;
  auto run = [&](bool fused, bool retain, int64_t* backward_growth) {
    Variable x(x0.clone(), true), w(w0.clone(), true);
    Variable loss = fused ? linear_cross_entropy(x, w, targets) : cross_entropy(linear(x, w, Variable()), targets);
    const int64_t before = memory_stats(Device::cpu())[MemoryCategory::activation].live;
    reset_peak_memory(Device::cpu());
    loss.backward(retain);
    *backward_growth = memory_stats(Device::cpu())[MemoryCategory::activation].peak - before;
    if (retain) loss.backward();  // a second pass through the retained graph
    return std::vector<std::vector<float>>{{float(loss.data().item())}, x.grad().to_vector<float>(),
                                           w.grad().to_vector<float>()};
  };
  int64_t fused_growth = 0, unfused_growth = 0, retained_growth = 0;
  const auto fused = run(true, false, &fused_growth), unfused = run(false, false, &unfused_growth);
  EXPECT_EQ(fused, unfused);
  EXPECT_GE(unfused_growth, logits_bytes) << "the unfused backward allocates dlogits";
  EXPECT_LT(fused_growth, logits_bytes) << "the fused backward writes dlogits over its logits";
  const auto twice = run(true, true, &retained_growth);
  for (size_t i = 1; i < 3; ++i) {
    for (size_t j = 0; j < twice[i].size(); ++j) EXPECT_FLOAT_EQ(twice[i][j], 2.0f * fused[i][j]) << i << "," << j;
  }
}

// The rules with parameters (linear, linear_gelu, mlp, the LM head, LayerNorm,
// add + LayerNorm, embedding) write a bf16 parameter's gradient straight into its f32
// buffer (claim_leaf_grad): the same gradient as without a buffer, but
// summed in f32 and never rounded to bf16, so some of its elements are not
// bf16 values; and added to, not overwritten, by a second backward.
TEST(AutogradFunctions, ParameterGradientsGoStraightIntoF32Buffers) {
  auto bf16 = [](const Shape& shape, const char* name) { return randn64(shape, name).to(DType::bf16); };
  const Tensor xs = bf16({6, 8}, "x"), ys = bf16({6, 8}, "y"), targets =
      Tensor::from_vector(std::vector<int32_t>{1, 5, 0, 15, 7, 2}, {6});
  auto squares = [](const Variable& y) { return sum(mul(y, y)); };  // dy = 2 y: no two rows alike
  using Params = std::vector<Variable>;
  struct Case {
    const char* name;
    std::vector<Shape> shapes;
    std::function<Variable(const Variable&, const Params&)> loss;
  };
  const std::vector<Case> cases{
      {"linear", {{16, 8}, {16}}, [&](const Variable& x, const Params& p) { return squares(linear(x, p[0], p[1])); }},
      {"linear_gelu", {{16, 8}, {16}},
       [&](const Variable& x, const Params& p) { return squares(linear_gelu(x, p[0], p[1])); }},
      {"mlp", {{16, 8}, {16}, {8, 16}, {8}},
       [&](const Variable& x, const Params& p) { return squares(mlp(x, p[0], p[1], p[2], p[3])); }},
      {"lm head", {{16, 8}}, [&](const Variable& x, const Params& p) { return linear_cross_entropy(x, p[0], targets); }},
      {"layernorm", {{8}, {8}},
       [](const Variable& x, const Params& p) { return sum(mul(layernorm(x, p[0], p[1]), x)); }},
      {"add_layernorm", {{8}, {8}}, [&](const Variable& x, const Params& p) {
         auto [total, norm] = add_layernorm(x, Variable(ys), p[0], p[1]);
         return sum(mul(norm, x));
       }},
      {"embedding", {{16, 8}}, [&](const Variable& x, const Params& p) {  // rows 1 and 5 twice, 7 never
         const Tensor ids = Tensor::from_vector(std::vector<int32_t>{1, 5, 1, 0, 5, 2}, {6});
         return sum(mul(embedding(p[0], ids), x));
       }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Params with_buffers, plain;
    std::vector<Tensor> buffers;
    for (size_t i = 0; i < c.shapes.size(); ++i) {
      const Tensor value = bf16(c.shapes[i], i == 0 ? "w" : "b");
      with_buffers.emplace_back(value, true), plain.emplace_back(value, true);
      buffers.push_back(Tensor::full(c.shapes[i], std::nan("")));
      with_buffers.back().set_stale_grad(buffers.back());
    }
    Variable x(xs, true);
    c.loss(x, with_buffers).backward();
    c.loss(x, plain).backward();  // no buffers: bf16 gradients
    std::vector<std::vector<float>> first;
    for (size_t i = 0; i < buffers.size(); ++i) {
      ASSERT_EQ(plain[i].grad().dtype(), DType::bf16);
      const std::vector<float> got = buffers[i].to_vector<float>();
      EXPECT_TRUE(test::all_close(got, plain[i].grad().to_vector<float>(), 2e-2, 2e-3)) << "parameter " << i;
      EXPECT_NE(got, buffers[i].to(DType::bf16).to_vector<float>())
          << "parameter " << i << ": every element a bf16 value, so the sums were rounded to 16 bits";
      first.push_back(got);
    }
    c.loss(x, with_buffers).backward();
    for (size_t i = 0; i < buffers.size(); ++i) {
      std::vector<float> twice = first[i];
      for (float& v : twice) v *= 2.0f;
      EXPECT_EQ(buffers[i].to_vector<float>(), twice) << "parameter " << i << ": added to, not overwritten";
    }
  }
}

TEST(AutogradFunctions, CrossEntropyOfSixteenBitLogitsIsF32) {
  Tensor targets = Tensor::from_vector(std::vector<int32_t>{0, 2, 3}, {3});
  for (DType dtype : {DType::bf16, DType::f16}) {
    Variable logits(Tensor::zeros({3, 5}, TensorOptions().dtype(dtype)), true);
    Variable loss = cross_entropy(logits, targets);
    EXPECT_EQ(loss.data().dtype(), DType::f32) << dtype_name(dtype);
    EXPECT_NEAR(loss.data().item(), std::log(5.0), 1e-6) << "all digits, not the 16-bit rounding";
    loss.backward();
    EXPECT_EQ(logits.grad().dtype(), dtype);
  }
}

}  // namespace
}  // namespace sg
