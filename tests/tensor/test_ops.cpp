// Tensor-level ops: results against plain references (odd sizes, views,
// 16-bit inputs), sharded elementwise ops, and the errors on bad arguments.
#include <gtest/gtest.h>

#include <cmath>

#include "tensor/ops.h"
#include "tensor/rng.h"
#include "tests/test_util.h"

namespace sg {
namespace {

using test::all_close;

Tensor randn(const Shape& shape, const char* name, double std = 1.0) {
  Tensor t = Tensor::empty(shape);
  fill_normal_(t, 11, name, 0.0, std);
  return t;
}

// Naive product of two (M, K) x (K, N) host matrices read through at().
std::vector<double> naive_matmul(const Tensor& a, const Tensor& b) {
  int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  std::vector<double> out(size_t(M * N), 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j)
      for (int64_t p = 0; p < K; ++p) out[size_t(i * N + j)] += a.at({i, p}) * b.at({p, j});
  return out;
}

TEST(Ops, ElementwiseOpsMatchTheirDefinitions) {
  Tensor a = randn({3, 5}, "a"), b = randn({3, 5}, "b");
  std::vector<float> av = a.to_vector<float>(), bv = b.to_vector<float>();
  std::vector<float> sum_v = add(a, b).to_vector<float>(), prod = mul(a, b).to_vector<float>();
  std::vector<float> scaled = scale(a, -3.0).to_vector<float>();
  for (size_t i = 0; i < av.size(); ++i) {
    EXPECT_EQ(sum_v[i], av[i] + bv[i]);
    EXPECT_EQ(prod[i], av[i] * bv[i]);
    EXPECT_EQ(scaled[i], -3.0f * av[i]);
  }
  Tensor y = a.clone();
  axpy_(y, 2.0, b);
  EXPECT_TRUE(all_close(y.to_vector<float>(), add(a, scale(b, 2.0)).to_vector<float>(), 1e-6));
  // In place, also on a bf16 tensor and a strided view (through a copy there).
  Tensor z = a.clone();
  scale_(z, -3.0);
  EXPECT_EQ(z.to_vector<float>(), scaled);
  Tensor h = a.to(DType::bf16);
  scale_(h, 0.5);
  EXPECT_EQ(h.to_vector<float>(), scale(a.to(DType::bf16), 0.5).to_vector<float>());
  Tensor w = a.clone();
  Tensor transposed = w.transpose(0, 1);  // not contiguous: written back through copy_
  scale_(transposed, 2.0);
  EXPECT_EQ(w.to_vector<float>(), scale(a, 2.0).to_vector<float>());
}

TEST(Ops, ElementwiseOpsReadViews) {
  Tensor a = randn({4, 3}, "a");
  Tensor at = a.transpose(0, 1), bt = randn({3, 4}, "b");
  EXPECT_EQ(add(at, bt).to_vector<float>(), add(at.contiguous(), bt).to_vector<float>());
}

TEST(Ops, ElementwiseOpsOnEqualShardsTouchOnlyTheShard) {
  Tensor a = Tensor::empty_sharded({10}, 1, 3), b = Tensor::empty_sharded({10}, 1, 3);
  fill_normal_(a, 1, "a");
  fill_normal_(b, 1, "b");
  Tensor c = add(a, b);
  EXPECT_EQ(c.layout(), a.layout());
  std::vector<float> av = a.local().to_vector<float>(), bv = b.local().to_vector<float>();
  std::vector<float> cv = c.local().to_vector<float>();
  for (size_t i = 0; i < cv.size(); ++i) EXPECT_EQ(cv[i], av[i] + bv[i]);
  EXPECT_THROW(add(a, Tensor::empty_sharded({10}, 2, 3)), Error);  // another rank's layout
  EXPECT_THROW(sum(a), Error);  // a whole-tensor reduction needs a collective
}

TEST(Ops, ShapeAndDtypeMismatchesAreClearErrors) {
  Tensor a = randn({2, 3}, "a");
  EXPECT_THROW(add(a, randn({3, 2}, "b")), Error);
  EXPECT_THROW(add(a, a.to(DType::bf16)), Error);
  EXPECT_THROW(gelu(a.to(DType::i32)), Error);
  EXPECT_THROW(matmul(a, randn({2, 3}, "c")), Error);
  EXPECT_THROW(matmul(a, randn({3}, "v")), Error);
  EXPECT_THROW(add_bias(a, randn({2}, "bias")), Error);
  EXPECT_THROW(attention(randn({1, 4, 10}, "qkv"), 2), Error);  // 10 is not 3C
  EXPECT_THROW(attention(randn({1, 4, 9}, "qkv"), 2), Error);   // C = 3 over 2 heads
  try {
    add(a, randn({3, 2}, "b"));
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("f32[2, 3]"), std::string::npos) << e.what();
  }
}

TEST(Ops, MatmulMatchesNaiveProductForOddSizes) {
  Tensor a = randn({7, 13}, "a"), b = randn({13, 5}, "b");
  EXPECT_TRUE(all_close(matmul(a, b).to_vector<float>(), naive_matmul(a, b), 1e-5, 1e-5));
}

TEST(Ops, MatmulBiasIsTheProductPlusTheBiasOnEveryRow) {
  Tensor a = randn({2, 7, 13}, "a"), b = randn({5, 13}, "b"), bias = randn({5}, "bias");
  Tensor bt = b.transpose(0, 1);
  EXPECT_TRUE(all_close(matmul_bias(a, bt, bias).to_vector<float>(), add_bias(matmul(a, bt), bias).to_vector<double>(),
                        1e-6, 1e-6));
  EXPECT_EQ(matmul_bias(a, bt, bias).shape(), (Shape{2, 7, 5}));
  EXPECT_THROW(matmul_bias(a, bt, randn({4}, "short")), Error);
  EXPECT_THROW(matmul_bias(a, bt, bias.to(DType::bf16)), Error);
}

// The MLP's two ops with GELU (on the CPU: the separate passes; CUDA's
// epilogues are tests/cuda/test_cuda_gelu_epilogue.cpp): h = a b + bias and
// y = gelu(h); dh from the GEMM only on CUDA. Bad shapes and shards throw.
TEST(Ops, MatmulBiasGeluKeepsGelusInput) {
  Tensor a = randn({2, 7, 13}, "a"), b = randn({13, 8}, "b"), bias = randn({8}, "bias");
  const LinearGeluOutput out = matmul_bias_gelu(a, b, bias);
  EXPECT_TRUE(all_close(out.h.to_vector<float>(), matmul_bias(a, b, bias).to_vector<double>(), 1e-6, 1e-6));
  EXPECT_TRUE(all_close(out.y.to_vector<float>(), gelu(out.h).to_vector<double>(), 1e-6, 1e-6));
  EXPECT_FALSE(matmul_gelu_backward(randn({2, 7, 5}, "dy"), randn({5, 8}, "w"), out.h).defined());
  EXPECT_THROW(matmul_bias_gelu(a, b, randn({5}, "short")), Error);
  EXPECT_THROW(matmul_gelu_backward(randn({2, 7, 5}, "dy"), randn({5, 9}, "w"), out.h), Error);
  EXPECT_THROW(matmul_bias_gelu(Tensor::empty_sharded({13}, 0, 2).view({1, 13}), b, bias), Error);
}

TEST(Ops, MatmulReadsTransposedAndSlicedViewsInPlace) {
  Tensor a = randn({13, 7}, "a"), b = randn({5, 20}, "b");
  Tensor at = a.transpose(0, 1);                    // (7, 13) stored transposed
  Tensor bs = b.slice(1, 2, 15).transpose(0, 1);    // (13, 5), strided and transposed
  std::vector<double> expected = naive_matmul(at.contiguous(), bs.contiguous());
  EXPECT_TRUE(all_close(matmul(at, bs).to_vector<float>(), expected, 1e-5, 1e-5));
}

TEST(Ops, MatmulFoldsLeadingDimsAndBatches) {
  Tensor x = randn({2, 3, 4}, "x"), w = randn({4, 6}, "w");
  Tensor folded = matmul(x, w);
  EXPECT_EQ(folded.shape(), (Shape{2, 3, 6}));
  EXPECT_TRUE(all_close(folded.to_vector<float>(), naive_matmul(x.view({6, 4}), w), 1e-5, 1e-5));
  Tensor q = randn({2, 3, 4, 5}, "q"), k = randn({2, 3, 6, 5}, "k");
  Tensor scores = matmul(q, k.transpose(-1, -2));  // (2, 3, 4, 6), a batched q k^T
  EXPECT_EQ(scores.shape(), (Shape{2, 3, 4, 6}));
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < 3; ++h) {
      Tensor qi = q.slice(0, b, b + 1).slice(1, h, h + 1).reshape({4, 5});
      Tensor ki = k.slice(0, b, b + 1).slice(1, h, h + 1).reshape({6, 5});
      Tensor si = scores.slice(0, b, b + 1).slice(1, h, h + 1).reshape({4, 6});
      EXPECT_TRUE(all_close(si.to_vector<float>(), naive_matmul(qi, ki.transpose(0, 1)), 1e-5, 1e-5));
    }
}

TEST(Ops, MatmulInSixteenBitsIsCloseToF32) {
  Tensor a = randn({9, 31}, "a"), b = randn({31, 4}, "b");
  std::vector<float> exact = matmul(a, b).to_vector<float>();
  Tensor half = matmul(a.to(DType::bf16), b.to(DType::bf16));
  EXPECT_EQ(half.dtype(), DType::bf16);
  EXPECT_TRUE(all_close(half.to_vector<float>(), exact, 3e-2, 5e-2));
}

TEST(Ops, BiasAddAndBackward) {
  Tensor x = randn({2, 3, 4}, "x"), bias = randn({4}, "bias");
  Tensor y = add_bias(x, bias);
  EXPECT_EQ(y.at({1, 2, 3}), float(x.at({1, 2, 3})) + float(bias.at({3})));
  Tensor dbias = bias_backward(x);
  double column = 0.0;
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j) column += x.at({i, j, 1});
  EXPECT_NEAR(dbias.at({1}), column, 1e-5);
}

TEST(Ops, ReductionsGiveScalars) {
  Tensor x = Tensor::from_vector(std::vector<float>{1, -2, 3, 4}, {2, 2});
  EXPECT_EQ(sum(x).item(), 6.0);
  EXPECT_EQ(mean(x).item(), 1.5);
  EXPECT_EQ(max(x).item(), 4.0);
  EXPECT_EQ(squared_norm(x).item(), 30.0);
  EXPECT_EQ(sum(x.transpose(0, 1).slice(0, 1, 2)).item(), 2.0);  // -2 + 4 through a view
  EXPECT_EQ(sum(x).dim(), 0);
  EXPECT_THROW(mean(Tensor::zeros({0})), Error);
  // Every tensor's squared norm added up, in one reduction (the global gradient norm).
  Tensor y = Tensor::from_vector(std::vector<float>{0.5f, 2}, {2}), empty = Tensor::zeros({0});
  EXPECT_EQ(squared_norm_total({x, y, empty}).item(), 30.0 + 0.25 + 4.0);
  EXPECT_EQ(squared_norm_total({x}).dim(), 0);
  EXPECT_EQ(squared_norm_total({x.to(DType::f64)}).dtype(), DType::f64);
  EXPECT_THROW(squared_norm_total({}), Error);
  EXPECT_THROW(squared_norm_total({x, y.to(DType::f64)}), Error);  // one dtype
}

TEST(Ops, GeluSoftmaxAndTheirBackwardsAgreeWithTheirDefinitions) {
  Tensor x = randn({3, 7}, "x", 2.0);
  Tensor g = gelu(x);
  double v = x.at({2, 5});
  EXPECT_NEAR(g.at({2, 5}), 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))), 1e-6);
  Tensor y = softmax(x);
  EXPECT_NEAR(sum(y).item(), 3.0, 1e-5);
  Tensor ones = Tensor::ones({3, 7});
  // d/dx sum(softmax(x)) = 0: each row of the softmax sums to one whatever x is.
  EXPECT_LT(max(softmax_backward(y, ones)).item(), 1e-6);
  // GELU's slope at 0 is 1/2.
  EXPECT_NEAR(gelu_backward(Tensor::zeros({1}), Tensor::ones({1})).item(), 0.5, 1e-7);
}

TEST(Ops, LayerNormNormalizesEachRow) {
  Tensor x = randn({4, 10}, "x", 3.0);
  LayerNormOutput ln = layernorm(x, Tensor::ones({10}), Tensor::zeros({10}));
  for (int64_t r = 0; r < 4; ++r) {
    Tensor row = ln.out.slice(0, r, r + 1);
    EXPECT_NEAR(mean(row).item(), 0.0, 1e-6);
    EXPECT_NEAR(squared_norm(row).item() / 10.0, 1.0, 1e-4);
  }
  EXPECT_EQ(ln.mean.shape(), (Shape{4}));
  LayerNormGrads grads = layernorm_backward(Tensor::ones({4, 10}), x, Tensor::ones({10}), ln.mean, ln.rstd);
  EXPECT_NEAR(sum(grads.dbias).item(), 40.0, 1e-5);
  EXPECT_LT(max(grads.dx).item(), 1e-5);  // a constant upstream gradient cannot move a normalized row
  EXPECT_THROW(layernorm(x, Tensor::ones({9}), Tensor::zeros({10})), Error);
}

TEST(Ops, AttentionShapesAndCausality) {
  Tensor qkv = randn({2, 5, 12}, "qkv");
  AttentionOutput a = attention(qkv, 2);
  EXPECT_EQ(a.out.shape(), (Shape{2, 5, 4}));
  EXPECT_EQ(a.att.shape(), (Shape{2, 2, 5, 5}));
  EXPECT_EQ(a.att.at({1, 1, 0, 0}), 1.0);  // the first token sees only itself
  // The first token's output is its own value vector.
  for (int64_t c = 0; c < 4; ++c) EXPECT_NEAR(a.out.at({0, 0, c}), qkv.at({0, 0, 8 + c}), 1e-6);
  Tensor dqkv = attention_backward(Tensor::ones({2, 5, 4}), qkv, a.att, 2);
  EXPECT_EQ(dqkv.shape(), qkv.shape());
}

TEST(Ops, EmbeddingAndCrossEntropy) {
  Tensor table = randn({6, 3}, "wte");
  Tensor ids = Tensor::from_vector(std::vector<int64_t>{5, 0, 5}, {3});
  Tensor rows = embedding(table, ids);
  EXPECT_EQ(rows.shape(), (Shape{3, 3}));
  EXPECT_EQ(rows.at({2, 1}), table.at({5, 1}));
  Tensor dtable = embedding_backward(Tensor::ones({3, 3}), ids, 6);
  EXPECT_EQ(dtable.at({5, 0}), 2.0);
  EXPECT_THROW(embedding(table, Tensor::from_vector(std::vector<int32_t>{6}, {1})), Error);
  EXPECT_THROW(embedding(table, Tensor::zeros({2})), Error);  // float ids

  Tensor logits = Tensor::zeros({2, 4});  // uniform: every loss is log 4
  Tensor targets = Tensor::from_vector(std::vector<int32_t>{1, -1}, {2});
  CrossEntropyOutput ce = cross_entropy(logits, targets);
  EXPECT_NEAR(ce.losses.at({0}), std::log(4.0), 1e-6);
  EXPECT_EQ(ce.losses.at({1}), 0.0);  // ignored
  Tensor d = cross_entropy_backward(Tensor::ones({2}), logits, ce.lse, targets);
  EXPECT_NEAR(d.at({0, 1}), 0.25 - 1.0, 1e-6);
  EXPECT_NEAR(d.at({0, 2}), 0.25, 1e-6);
  EXPECT_EQ(d.at({1, 2}), 0.0);
  EXPECT_THROW(cross_entropy(logits, Tensor::from_vector(std::vector<int32_t>{4, 0}, {2})), Error);
  EXPECT_THROW(cross_entropy(logits, Tensor::from_vector(std::vector<int32_t>{0}, {1})), Error);
  // The mean over counted rows, and its gradient: dloss / count per counted row.
  CrossEntropyMean mean = cross_entropy_mean(ce.losses, targets);
  EXPECT_NEAR(mean.loss.item(), std::log(4.0), 1e-6);
  EXPECT_EQ(mean.count.item(), 1.0);
  Tensor dm = cross_entropy_mean_backward(Tensor::full({}, 2.0), mean.count, logits, ce.lse, targets);
  EXPECT_NEAR(dm.at({0, 1}), 2.0 * (0.25 - 1.0), 1e-6);
  EXPECT_EQ(dm.at({1, 0}), 0.0);
  Tensor all_ignored = Tensor::from_vector(std::vector<int32_t>{-1, -1}, {2});
  EXPECT_THROW(cross_entropy_mean(ce.losses, all_ignored), Error);
}

TEST(Ops, AdamWUpdatesShardsInPlace) {
  Tensor p = Tensor::empty_sharded({10}, 0, 2), m = Tensor::empty_sharded({10}, 0, 2);
  Tensor v = Tensor::empty_sharded({10}, 0, 2), g = Tensor::empty_sharded({10}, 0, 2);
  g.local().fill_(1.0);
  AdamWParams hp;
  hp.lr = 0.1f;
  adamw_update_(p, m, v, g, hp);
  // First step with a constant gradient moves every element by -lr (m_hat / sqrt(v_hat) = 1).
  EXPECT_NEAR(p.at({3}), -0.1, 1e-6);
  Tensor wrong = Tensor::empty_sharded({10}, 1, 2);
  EXPECT_THROW(adamw_update_(p, m, v, wrong, hp), Error);
  hp.step = 0;
  EXPECT_THROW(adamw_update_(p, m, v, g, hp), Error);
}

// The 16-bit copy mixed precision needs, written in the same pass: the
// updated f32 parameters rounded, bit for bit what a cast gives.
TEST(Ops, AdamWWritesTheSixteenBitCopyInItsPass) {
  Tensor p = randn({33}, "p"), g = randn({33}, "g"), m = Tensor::zeros({33}), v = Tensor::zeros({33});
  AdamWParams hp;
  hp.lr = 0.01f;
  for (DType dtype : {DType::bf16, DType::f16}) {
    Tensor copy = Tensor::zeros({33}, TensorOptions().dtype(dtype));
    adamw_update_(p, m, v, g, hp, &copy);
    Tensor cast = p.to(dtype);
    EXPECT_EQ(copy.to(DType::f32).to_vector<float>(), cast.to(DType::f32).to_vector<float>()) << dtype_name(dtype);
  }
  Tensor short_copy = Tensor::zeros({32}, TensorOptions().dtype(DType::bf16));
  EXPECT_THROW(adamw_update_(p, m, v, g, hp, &short_copy), Error);
  Tensor f32_copy = Tensor::zeros({33});
  EXPECT_THROW(adamw_update_(p, m, v, g, hp, &f32_copy), Error);
}

TEST(Ops, SixteenBitInputsComputeInF32OnTheCpu) {
  Tensor x = randn({4, 8}, "x");
  Tensor expected = gelu(x.to(DType::bf16).to(DType::f32));
  Tensor got = gelu(x.to(DType::bf16));
  EXPECT_EQ(got.dtype(), DType::bf16);
  EXPECT_EQ(got.to_vector<bf16>().at(5).bits, to_bf16(expected.to_vector<float>().at(5)).bits);
}

}  // namespace
}  // namespace sg
