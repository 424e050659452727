// Every backward op against f64 central finite differences of its forward op,
// run through the tensor API in f64: L(x) = sum(forward(x) * dout), and
// dL/dx from the backward op must match (L(x + h) - L(x - h)) / 2h.
#include <gtest/gtest.h>

#include <functional>

#include "tensor/ops.h"
#include "tensor/rng.h"
#include "tests/test_util.h"

namespace sg {
namespace {

using test::all_close;

Tensor randn64(const Shape& shape, const char* name, double std = 1.0) {
  Tensor t = Tensor::empty(shape);
  fill_normal_(t, 3, name, 0.0, std);
  return t.to(DType::f64);
}

// f64 finite-difference gradient of sum(forward(x) * dout) with respect to x.
std::vector<double> numeric_gradient(const std::function<Tensor(const Tensor&)>& forward, const Tensor& x,
                                     const Tensor& dout, double h = 1e-6) {
  Tensor point = x.clone();
  double* values = point.data<double>();
  auto loss = [&] { return sum(mul(forward(point), dout)).item(); };
  std::vector<double> gradient(size_t(x.numel()));
  for (int64_t i = 0; i < x.numel(); ++i) {
    double saved = values[i];
    values[i] = saved + h;
    double plus = loss();
    values[i] = saved - h;
    double minus = loss();
    values[i] = saved;
    gradient[size_t(i)] = (plus - minus) / (2 * h);
  }
  return gradient;
}

::testing::AssertionResult matches_numeric(const Tensor& analytic, const std::function<Tensor(const Tensor&)>& forward,
                                           const Tensor& x, const Tensor& dout) {
  if (analytic.dtype() != DType::f64) return ::testing::AssertionFailure() << "gradient is " << analytic.str();
  return all_close(analytic.to_vector<double>(), numeric_gradient(forward, x, dout), 1e-6, 1e-8);
}

TEST(OpGradients, MatmulBothOperands) {
  Tensor a = randn64({4, 3}, "a"), b = randn64({3, 5}, "b"), dc = randn64({4, 5}, "dc");
  // dA = dC B^T and dB = A^T dC, computed through transposed views.
  EXPECT_TRUE(matches_numeric(matmul(dc, b.transpose(0, 1)), [&](const Tensor& v) { return matmul(v, b); }, a, dc));
  EXPECT_TRUE(matches_numeric(matmul(a.transpose(0, 1), dc), [&](const Tensor& v) { return matmul(a, v); }, b, dc));
}

TEST(OpGradients, BiasAndElementwise) {
  Tensor x = randn64({3, 4}, "x"), bias = randn64({4}, "bias"), y = randn64({3, 4}, "y"), d = randn64({3, 4}, "d");
  EXPECT_TRUE(matches_numeric(bias_backward(d), [&](const Tensor& v) { return add_bias(x, v); }, bias, d));
  EXPECT_TRUE(matches_numeric(mul(d, y), [&](const Tensor& v) { return mul(v, y); }, x, d));
  EXPECT_TRUE(matches_numeric(scale(d, 2.5), [&](const Tensor& v) { return scale(v, 2.5); }, x, d));
  EXPECT_TRUE(matches_numeric(d, [&](const Tensor& v) { return add(v, y); }, x, d));
}

TEST(OpGradients, Gelu) {
  Tensor x = randn64({17}, "x", 2.0), d = randn64({17}, "d");
  EXPECT_TRUE(matches_numeric(gelu_backward(x, d), [](const Tensor& v) { return gelu(v); }, x, d));
}

TEST(OpGradients, Softmax) {
  Tensor x = randn64({3, 6}, "x", 2.0), d = randn64({3, 6}, "d");
  EXPECT_TRUE(matches_numeric(softmax_backward(softmax(x), d), [](const Tensor& v) { return softmax(v); }, x, d));
}

TEST(OpGradients, LayerNormInputWeightAndBias) {
  Tensor x = randn64({4, 7}, "x", 2.0), w = randn64({7}, "w"), b = randn64({7}, "b"), d = randn64({4, 7}, "d");
  LayerNormOutput ln = layernorm(x, w, b);
  LayerNormGrads g = layernorm_backward(d, x, w, ln.mean, ln.rstd);
  EXPECT_TRUE(matches_numeric(g.dx, [&](const Tensor& v) { return layernorm(v, w, b).out; }, x, d));
  EXPECT_TRUE(matches_numeric(g.dweight, [&](const Tensor& v) { return layernorm(x, v, b).out; }, w, d));
  EXPECT_TRUE(matches_numeric(g.dbias, [&](const Tensor& v) { return layernorm(x, w, v).out; }, b, d));
  // A gradient x has from elsewhere, added into dx in the same pass: exactly dx + it.
  Tensor extra = randn64({4, 7}, "extra");
  LayerNormGrads with_extra = layernorm_backward(d, x, w, ln.mean, ln.rstd, extra);
  EXPECT_EQ(with_extra.dx.to_vector<double>(), add(g.dx, extra).to_vector<double>());
  EXPECT_EQ(with_extra.dweight.to_vector<double>(), g.dweight.to_vector<double>());
  EXPECT_THROW(layernorm_backward(d, x, w, ln.mean, ln.rstd, randn64({4, 6}, "wrong")), Error);
}

TEST(OpGradients, CausalAttention) {
  Tensor qkv = randn64({2, 4, 3 * 6}, "qkv"), d = randn64({2, 4, 6}, "d");
  AttentionOutput a = attention(qkv, 2);
  EXPECT_TRUE(matches_numeric(attention_backward(d, qkv, a.att, 2),
                              [](const Tensor& v) { return attention(v, 2).out; }, qkv, d));
}

TEST(OpGradients, FusedCausalAttention) {
  Tensor qkv = randn64({2, 5, 3 * 6}, "qkv"), d = randn64({2, 5, 6}, "d");
  FusedAttentionOutput a = fused_attention(qkv, 3);
  EXPECT_TRUE(matches_numeric(fused_attention_backward(d, qkv, a.out, a.lse, 3),
                              [](const Tensor& v) { return fused_attention(v, 3).out; }, qkv, d));
  EXPECT_TRUE(all_close(a.out.to_vector<double>(), attention(qkv, 3).out.to_vector<double>(), 1e-12, 1e-14));
}

TEST(OpGradients, GemmAttentionAndCausalSoftmax) {
  // 2 rows of 3 heads: one GEMM call per batch row; 4 rows of 1 head: one per head.
  for (auto [B, NH] : {std::pair<int64_t, int64_t>{2, 3}, {4, 1}}) {
    Tensor qkv = randn64({B, 5, 3 * 6}, "qkv"), d = randn64({B, 5, 6}, "d");
    AttentionOutput a = gemm_attention(qkv, NH);
    EXPECT_TRUE(all_close(a.out.to_vector<double>(), attention(qkv, NH).out.to_vector<double>(), 1e-12, 1e-14));
    EXPECT_TRUE(all_close(a.att.to_vector<double>(), attention(qkv, NH).att.to_vector<double>(), 1e-12, 1e-14));
    EXPECT_TRUE(matches_numeric(gemm_attention_backward(d, qkv, a.att, NH),
                                [NH = NH](const Tensor& v) { return gemm_attention(v, NH).out; }, qkv, d));
  }
  Tensor scores = randn64({2, 4, 4}, "scores"), dp = randn64({2, 4, 4}, "dp");
  EXPECT_TRUE(matches_numeric(causal_softmax_backward(causal_softmax(scores, 0.7), dp, 0.7),
                              [](const Tensor& v) { return causal_softmax(v, 0.7); }, scores, dp));
  EXPECT_EQ(causal_softmax(scores, 0.7).at({1, 0, 3}), 0.0);  // masked: query 0 sees key 0 only
}

TEST(OpGradients, EmbeddingTable) {
  Tensor table = randn64({5, 3}, "wte"), d = randn64({2, 2, 3}, "d");
  Tensor ids = Tensor::from_vector(std::vector<int32_t>{4, 1, 4, 0}, {2, 2});
  EXPECT_TRUE(matches_numeric(embedding_backward(d, ids, 5), [&](const Tensor& v) { return embedding(v, ids); },
                              table, d));
}

TEST(OpGradients, CrossEntropyLogits) {
  Tensor logits = randn64({3, 7}, "logits", 2.0), d = randn64({3}, "d");
  Tensor targets = Tensor::from_vector(std::vector<int64_t>{6, -1, 2}, {3});
  CrossEntropyOutput ce = cross_entropy(logits, targets);
  EXPECT_TRUE(matches_numeric(cross_entropy_backward(d, logits, ce.lse, targets),
                              [&](const Tensor& v) { return cross_entropy(v, targets).losses; }, logits, d));
}

TEST(OpGradients, F64IsExactEnoughToCheckWith) {
  // The numeric check is only as good as f64: a round trip must be lossless and
  // the ops must keep f64 end to end.
  Tensor x = randn64({5}, "x");
  EXPECT_EQ(gelu(x).dtype(), DType::f64);
  EXPECT_EQ(sum(x).dtype(), DType::f64);
  EXPECT_EQ(Tensor::from_vector(std::vector<double>{0.1, 1e300}, {2}).to_vector<double>(), (std::vector<double>{0.1, 1e300}));
  EXPECT_EQ(dtype_name(DType::f64), "f64");
}

}  // namespace
}  // namespace sg
