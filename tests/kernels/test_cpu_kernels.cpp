// CPU kernels against plain f64 references written here, and every backward
// kernel against f64 finite differences of that reference forward.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/adamw.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/flash_attention.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/loss.h"
#include "kernels/cpu/normalization.h"
#include "kernels/cpu/reduce.h"
#include "kernels/cpu/rng.h"
#include "tests/test_util.h"

namespace sg {
namespace {

using test::all_close;
using test::finite_difference_gradient;
using test::random_floats;
using test::to_double;
using Vec = std::vector<double>;

// ---- f64 references -------------------------------------------------------

Vec gelu_reference(const Vec& x) {
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    double u = std::sqrt(2.0 / M_PI) * (x[i] + 0.044715 * x[i] * x[i] * x[i]);
    y[i] = 0.5 * x[i] * (1.0 + std::tanh(u));
  }
  return y;
}

Vec layernorm_reference(const Vec& x, const Vec& w, const Vec& b, int64_t N, int64_t C) {
  Vec y(x.size());
  for (int64_t n = 0; n < N; ++n) {
    double mean = 0.0, var = 0.0;
    for (int64_t c = 0; c < C; ++c) mean += x[size_t(n * C + c)] / double(C);
    for (int64_t c = 0; c < C; ++c) var += std::pow(x[size_t(n * C + c)] - mean, 2) / double(C);
    for (int64_t c = 0; c < C; ++c) {
      y[size_t(n * C + c)] = (x[size_t(n * C + c)] - mean) / std::sqrt(var + 1e-5) * w[size_t(c)] + b[size_t(c)];
    }
  }
  return y;
}

Vec softmax_reference(const Vec& x, int64_t N, int64_t C) {
  Vec y(x.size());
  for (int64_t n = 0; n < N; ++n) {
    double max_value = *std::max_element(x.begin() + n * C, x.begin() + (n + 1) * C), sum = 0.0;
    for (int64_t c = 0; c < C; ++c) sum += std::exp(x[size_t(n * C + c)] - max_value);
    for (int64_t c = 0; c < C; ++c) y[size_t(n * C + c)] = std::exp(x[size_t(n * C + c)] - max_value) / sum;
  }
  return y;
}

// Causal attention straight from its definition: out = softmax(q k^T / sqrt(HS) + mask) v.
Vec attention_reference(const Vec& qkv, int64_t B, int64_t T, int64_t C, int64_t NH) {
  int64_t HS = C / NH;
  Vec out(size_t(B * T * C), 0.0);
  auto at = [&](int64_t b, int64_t t, int64_t part, int64_t h, int64_t i) {
    return qkv[size_t((b * T + t) * 3 * C + part * C + h * HS + i)];
  };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < NH; ++h)
      for (int64_t t = 0; t < T; ++t) {
        Vec scores(size_t(t + 1));
        for (int64_t s = 0; s <= t; ++s) {
          double dot = 0.0;
          for (int64_t i = 0; i < HS; ++i) dot += at(b, t, 0, h, i) * at(b, s, 1, h, i);
          scores[size_t(s)] = dot / std::sqrt(double(HS));
        }
        Vec p = softmax_reference(scores, 1, t + 1);
        for (int64_t s = 0; s <= t; ++s)
          for (int64_t i = 0; i < HS; ++i) out[size_t((b * T + t) * C + h * HS + i)] += p[size_t(s)] * at(b, s, 2, h, i);
      }
  return out;
}

Vec cross_entropy_reference(const Vec& logits, const std::vector<int32_t>& targets, int64_t N, int64_t V) {
  Vec losses(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) {
    if (targets[size_t(n)] < 0) continue;
    double max_value = *std::max_element(logits.begin() + n * V, logits.begin() + (n + 1) * V), sum = 0.0;
    for (int64_t j = 0; j < V; ++j) sum += std::exp(logits[size_t(n * V + j)] - max_value);
    losses[size_t(n)] = max_value + std::log(sum) - logits[size_t(n * V + targets[size_t(n)])];
  }
  return losses;
}

// ---- elementwise --------------------------------------------------------------

TEST(CpuKernels, ArithmeticMatchesDefinition) {
  const int64_t n = 1001;
  auto a = random_floats(n, 1), b = random_floats(n, 2);
  std::vector<float> out(n);
  cpu::add_forward(out.data(), a.data(), b.data(), n);
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(out[size_t(i)], a[size_t(i)] + b[size_t(i)]);
  cpu::mul_forward(out.data(), a.data(), b.data(), n);
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(out[size_t(i)], a[size_t(i)] * b[size_t(i)]);
  cpu::scale_forward(out.data(), a.data(), -2.5f, n);
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(out[size_t(i)], -2.5f * a[size_t(i)]);
}

TEST(CpuKernels, AxpyAccumulates) {
  const int64_t n = 77;
  auto a = random_floats(n, 3);
  std::vector<float> y(n, 0.5f);
  cpu::axpy(y.data(), 3.0f, a.data(), n);
  for (int64_t i = 0; i < n; ++i) EXPECT_FLOAT_EQ(y[size_t(i)], 0.5f + 3.0f * a[size_t(i)]);
}

TEST(CpuKernels, GeluForwardMatchesReference) {
  auto x = random_floats(513, 6, -5.0f, 5.0f);
  std::vector<float> y(x.size());
  cpu::gelu_forward(y.data(), x.data(), int64_t(x.size()));
  EXPECT_TRUE(all_close(y, gelu_reference(to_double(x)), 1e-5, 1e-7));
}

TEST(CpuKernels, GeluBackwardMatchesFiniteDifference) {
  auto x = random_floats(257, 7, -4.0f, 4.0f), dout = random_floats(257, 8);
  std::vector<float> dx(x.size(), 0.0f);
  cpu::gelu_backward(dx.data(), x.data(), dout.data(), int64_t(x.size()));
  Vec expected = finite_difference_gradient(gelu_reference, to_double(x), to_double(dout));
  EXPECT_TRUE(all_close(dx, expected, 1e-4, 1e-6));
}

// linear + GELU's fused epilogue: h = pre + bias in place and y = gelu(h) in
// one pass; backward dh = dy * gelu'(h), written rather than accumulated.
TEST(CpuKernels, BiasGeluMatchesBiasThenGelu) {
  const int64_t rows = 7, cols = 37;
  auto pre = random_floats(size_t(rows * cols), 9, -4.0f, 4.0f), bias = random_floats(size_t(cols), 10);
  std::vector<float> h = pre, y(pre.size());
  cpu::bias_gelu_forward(y.data(), h.data(), bias.data(), rows, cols);
  Vec expected_h(pre.size());
  for (int64_t i = 0; i < rows * cols; ++i) expected_h[size_t(i)] = double(pre[size_t(i)] + bias[size_t(i % cols)]);
  EXPECT_TRUE(all_close(h, expected_h, 0, 0));
  EXPECT_TRUE(all_close(y, gelu_reference(expected_h), 1e-5, 1e-7));
  auto dy = random_floats(h.size(), 11);
  std::vector<float> dh(h.size(), 123.0f);  // overwritten, not added to
  cpu::bias_gelu_backward(dh.data(), h.data(), dy.data(), int64_t(h.size()));
  Vec expected = finite_difference_gradient(gelu_reference, to_double(h), to_double(dy));
  EXPECT_TRUE(all_close(dh, expected, 1e-4, 1e-6));
}

TEST(CpuKernels, StridedCopyGathersATransposedView) {
  // A (2, 3, 4) tensor read through the permutation (2, 0, 1) and written contiguously.
  std::vector<float> in(24);
  for (int i = 0; i < 24; ++i) in[size_t(i)] = float(i);
  int64_t shape[3] = {4, 2, 3}, in_strides[3] = {1, 12, 4}, out_strides[3] = {6, 3, 1};
  std::vector<float> out(24, -1.0f);
  cpu::strided_copy(out.data(), out_strides, in.data(), in_strides, shape, 3, sizeof(float));
  for (int64_t k = 0; k < 4; ++k)
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < 3; ++j) EXPECT_EQ(out[size_t(k * 6 + i * 3 + j)], in[size_t(i * 12 + j * 4 + k)]);
}

TEST(CpuKernels, CastBetweenIntegerAndFloatTruncatesTowardZero) {
  std::vector<float> in = {-2.7f, -0.5f, 0.0f, 1.9f, 3e9f};
  std::vector<int64_t> out(in.size());
  cpu::cast(out.data(), DType::i64, in.data(), DType::f32, int64_t(in.size()));
  EXPECT_EQ(out, (std::vector<int64_t>{-2, 0, 0, 1, 3000000000}));
  std::vector<int32_t> ids = {-3, 0, 70000};
  std::vector<float> back(3);
  cpu::cast(back.data(), DType::f32, ids.data(), DType::i32, 3);
  EXPECT_EQ(back, (std::vector<float>{-3.0f, 0.0f, 70000.0f}));
}

TEST(CpuKernels, FillWritesEveryDtype) {
  std::vector<int64_t> big(3);
  cpu::fill(big.data(), DType::i64, 9007199254740993.0, 3);  // 2^53 + 1 is not a float
  EXPECT_EQ(big[2], 9007199254740992);                        // the double it arrives as
  std::vector<bf16> half(5);
  cpu::fill(half.data(), DType::bf16, 0.1, 5);
  EXPECT_EQ(half[4].bits, to_bf16(0.1f).bits);
  // Large fills (shared between threads), zero and not, stop at n: the guard element after them keeps its bits.
  const int64_t n = 300001;
  for (double value : {0.0, -0.0, 2.5}) {
    std::vector<float> f(size_t(n + 1), 7.0f);
    cpu::fill(f.data(), DType::f32, value, n);
    EXPECT_EQ(std::memcmp(&f[size_t(n - 1)], &f[0], 4), 0);
    EXPECT_EQ(std::signbit(f[size_t(n / 2)]), std::signbit(value));
    EXPECT_EQ(f[size_t(n / 3)], float(value));
    EXPECT_EQ(f[size_t(n)], 7.0f);
    std::vector<double> d(size_t(n + 1), 7.0);
    cpu::fill(d.data(), DType::f64, value, n);
    EXPECT_EQ(std::count(d.begin(), d.end(), value), n) << value;
    EXPECT_EQ(std::signbit(d[size_t(n - 1)]), std::signbit(value));
    std::vector<f16> h(size_t(n + 1), to_f16(7.0f));
    cpu::fill(h.data(), DType::f16, value, n);
    EXPECT_EQ(h[size_t(n - 1)].bits, to_f16(float(value)).bits);
    EXPECT_EQ(h[size_t(n)].bits, to_f16(7.0f).bits);
  }
  std::vector<int32_t> words(size_t(n + 1), 7);
  cpu::fill(words.data(), DType::i32, -3.0, n);
  EXPECT_EQ(std::count(words.begin(), words.end(), -3), n);
}

// ---- normalization --------------------------------------------------------------

TEST(CpuKernels, LayerNormForwardMatchesReference) {
  const int64_t N = 7, C = 33;
  auto x = random_floats(N * C, 9, -3.0f, 3.0f), w = random_floats(C, 10), b = random_floats(C, 11);
  std::vector<float> y(x.size()), mean(N), rstd(N);
  cpu::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
  EXPECT_TRUE(all_close(y, layernorm_reference(to_double(x), to_double(w), to_double(b), N, C), 1e-5, 1e-6));
}

TEST(CpuKernels, LayerNormBackwardMatchesFiniteDifference) {
  const int64_t N = 5, C = 17;
  auto x = random_floats(N * C, 12, -2.0f, 2.0f), w = random_floats(C, 13), b = random_floats(C, 14);
  auto dout = random_floats(N * C, 15);
  std::vector<float> y(x.size()), mean(N), rstd(N), dx(x.size(), 0.0f), dw(C, 0.0f), db(C, 0.0f);
  cpu::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
  cpu::layernorm_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), mean.data(), rstd.data(),
                          N, C);
  Vec xd = to_double(x), wd = to_double(w), bd = to_double(b), dd = to_double(dout);
  auto by_x = [&](const Vec& v) { return layernorm_reference(v, wd, bd, N, C); };
  auto by_w = [&](const Vec& v) { return layernorm_reference(xd, v, bd, N, C); };
  auto by_b = [&](const Vec& v) { return layernorm_reference(xd, wd, v, N, C); };
  EXPECT_TRUE(all_close(dx, finite_difference_gradient(by_x, xd, dd), 1e-3, 1e-5));
  EXPECT_TRUE(all_close(dw, finite_difference_gradient(by_w, wd, dd), 1e-4, 1e-5));
  EXPECT_TRUE(all_close(db, finite_difference_gradient(by_b, bd, dd), 1e-4, 1e-5));
}

TEST(CpuKernels, SoftmaxForwardAndBackward) {
  const int64_t N = 6, C = 19;
  auto x = random_floats(N * C, 16, -8.0f, 8.0f), dout = random_floats(N * C, 17);
  std::vector<float> y(x.size()), dx(x.size(), 0.0f);
  cpu::softmax_forward(y.data(), x.data(), N, C);
  EXPECT_TRUE(all_close(y, softmax_reference(to_double(x), N, C), 1e-5, 1e-7));
  cpu::softmax_backward(dx.data(), y.data(), dout.data(), N, C);
  auto f = [&](const Vec& v) { return softmax_reference(v, N, C); };
  EXPECT_TRUE(all_close(dx, finite_difference_gradient(f, to_double(x), to_double(dout)), 1e-4, 1e-6));
}

TEST(CpuKernels, SoftmaxIsStableForHugeLogits) {
  std::vector<float> x = {1000.0f, 1000.0f, -1000.0f}, y(3);
  cpu::softmax_forward(y.data(), x.data(), 1, 3);
  EXPECT_FLOAT_EQ(y[0], 0.5f);
  EXPECT_FLOAT_EQ(y[2], 0.0f);
}

// ---- attention ------------------------------------------------------------------

TEST(CpuKernels, AttentionForwardMatchesReference) {
  const int64_t B = 2, T = 5, C = 12, NH = 3;
  auto qkv = random_floats(B * T * 3 * C, 18, -2.0f, 2.0f);
  std::vector<float> out(size_t(B * T * C)), att(size_t(B * NH * T * T), -1.0f);
  cpu::attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
  EXPECT_TRUE(all_close(out, attention_reference(to_double(qkv), B, T, C, NH), 1e-5, 1e-6));
  // The causal mask: query t never attends to s > t; each row sums to one.
  for (int64_t row = 0; row < B * NH * T; ++row) {
    int64_t t = row % T;
    double total = 0.0;
    for (int64_t s = 0; s < T; ++s) {
      if (s > t) {
        EXPECT_EQ(att[size_t(row * T + s)], 0.0f);
      }
      total += att[size_t(row * T + s)];
    }
    EXPECT_NEAR(total, 1.0, 1e-6);
  }
}

// The fused form computes the same function without the (T, T) matrix; its
// lse is the log of each row's softmax denominator, and its backward (from
// lse and the output) equals the naive backward (from the matrix).
TEST(CpuKernels, FlashAttentionMatchesTheNaiveForm) {
  const int64_t B = 2, T = 7, C = 12, NH = 3;
  auto qkv = random_floats(B * T * 3 * C, 21, -2.0f, 2.0f), dout = random_floats(B * T * C, 22);
  std::vector<float> out(size_t(B * T * C)), att(size_t(B * NH * T * T)), naive_dqkv(qkv.size(), 0.0f);
  cpu::attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
  cpu::attention_backward(naive_dqkv.data(), dout.data(), qkv.data(), att.data(), B, T, C, NH);
  std::vector<float> fused(out.size()), lse(size_t(B * NH * T)), fused_dqkv(qkv.size(), 0.0f);
  cpu::flash_attention_forward(fused.data(), lse.data(), qkv.data(), B, T, C, NH);
  EXPECT_TRUE(all_close(fused, attention_reference(to_double(qkv), B, T, C, NH), 1e-5, 1e-6));
  cpu::flash_attention_backward(fused_dqkv.data(), dout.data(), qkv.data(), fused.data(), lse.data(), B, T, C, NH);
  EXPECT_TRUE(all_close(fused_dqkv, naive_dqkv, 1e-4, 1e-6));
  // Row t = 0 attends only to itself: its lse is its own scaled score.
  const int64_t HS = C / NH;
  double self = 0;
  for (int64_t i = 0; i < HS; ++i) self += double(qkv[size_t(i)]) * double(qkv[size_t(C + i)]);
  EXPECT_NEAR(lse[0], self / std::sqrt(double(HS)), 1e-5);
}

TEST(CpuKernels, AttentionBackwardMatchesFiniteDifference) {
  const int64_t B = 2, T = 4, C = 8, NH = 2;
  auto qkv = random_floats(B * T * 3 * C, 19, -1.5f, 1.5f), dout = random_floats(B * T * C, 20);
  std::vector<float> out(size_t(B * T * C)), att(size_t(B * NH * T * T)), dqkv(qkv.size(), 0.0f);
  cpu::attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
  cpu::attention_backward(dqkv.data(), dout.data(), qkv.data(), att.data(), B, T, C, NH);
  auto f = [&](const Vec& v) { return attention_reference(v, B, T, C, NH); };
  EXPECT_TRUE(all_close(dqkv, finite_difference_gradient(f, to_double(qkv), to_double(dout)), 1e-3, 1e-5));
}

// Past kCausalBlock (64) rows the products run block by block over the
// causal staircase (T = 150: blocks of 64, 64 and 22 rows). In f64 the
// forward is held to the definition and the backward to finite differences.
TEST(CpuKernels, AttentionInCausalBlocksMatchesTheDefinitionInF64) {
  const int64_t B = 1, T = 150, C = 4, NH = 2;
  const Vec qkv = to_double(random_floats(B * T * 3 * C, 25, -1.5f, 1.5f)), dout = to_double(random_floats(B * T * C, 26));
  Vec out(size_t(B * T * C)), att(size_t(B * NH * T * T), -1.0), dqkv(qkv.size(), 0.0);
  cpu::attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
  EXPECT_TRUE(all_close(out, attention_reference(qkv, B, T, C, NH), 1e-12, 1e-14));
  for (int64_t t = 0; t < T; ++t) {  // the mask, past every block's edge too
    for (int64_t s = t + 1; s < T; ++s) ASSERT_EQ(att[size_t((NH - 1) * T * T + t * T + s)], 0.0) << t << ", " << s;
  }
  cpu::attention_backward(dqkv.data(), dout.data(), qkv.data(), att.data(), B, T, C, NH);
  auto f = [&](const Vec& v) { return attention_reference(v, B, T, C, NH); };
  EXPECT_TRUE(all_close(dqkv, finite_difference_gradient(f, qkv, dout), 1e-6, 1e-8));
}

// ---- embedding and loss -----------------------------------------------------------

TEST(CpuKernels, EmbeddingLooksUpRowsAndScatterAddsGradients) {
  const int64_t V = 5, C = 3;
  auto table = random_floats(V * C, 21);
  std::vector<int32_t> ids = {4, 0, 4, 2};  // token 4 twice: its gradient is the sum
  std::vector<float> out(ids.size() * C);
  cpu::embedding_forward(out.data(), table.data(), ids.data(), int64_t(ids.size()), C);
  for (size_t n = 0; n < ids.size(); ++n)
    for (int64_t c = 0; c < C; ++c) EXPECT_EQ(out[n * C + size_t(c)], table[size_t(ids[n] * C + c)]);
  auto dout = random_floats(ids.size() * C, 22);
  std::vector<float> dtable(V * C, 0.0f);
  cpu::embedding_backward(dtable.data(), dout.data(), ids.data(), int64_t(ids.size()), C);
  for (int64_t c = 0; c < C; ++c) {
    EXPECT_FLOAT_EQ(dtable[size_t(4 * C + c)], dout[size_t(c)] + dout[size_t(2 * C + c)]);
    EXPECT_FLOAT_EQ(dtable[size_t(0 * C + c)], dout[size_t(1 * C + c)]);
    EXPECT_EQ(dtable[size_t(1 * C + c)], 0.0f);
  }
}

TEST(CpuKernels, CrossEntropyMatchesReferenceAndFiniteDifference) {
  const int64_t N = 6, V = 11;
  auto logits = random_floats(N * V, 23, -4.0f, 4.0f), dloss = random_floats(N, 24);
  std::vector<int32_t> targets = {0, 10, 3, -1, 7, 7};  // -1: ignored row
  std::vector<float> losses(N), lse(N), dlogits(logits.size(), std::nanf(""));  // every element is written
  cpu::cross_entropy_forward(losses.data(), lse.data(), logits.data(), targets.data(), N, V);
  EXPECT_TRUE(all_close(losses, cross_entropy_reference(to_double(logits), targets, N, V), 1e-5, 1e-6));
  EXPECT_EQ(losses[3], 0.0f);
  cpu::cross_entropy_backward(dlogits.data(), dloss.data(), logits.data(), lse.data(), targets.data(), N, V);
  auto f = [&](const Vec& v) { return cross_entropy_reference(v, targets, N, V); };
  EXPECT_TRUE(all_close(dlogits, finite_difference_gradient(f, to_double(logits), to_double(dloss)), 1e-4, 1e-6));
  for (int64_t j = 0; j < V; ++j) EXPECT_EQ(dlogits[size_t(3 * V + j)], 0.0f);
  // In place: dlogits written over the logits gives the same values.
  std::vector<float> in_place = logits;
  cpu::cross_entropy_backward(in_place.data(), dloss.data(), in_place.data(), lse.data(), targets.data(), N, V);
  EXPECT_EQ(in_place, dlogits);
}

// ---- reductions and optimizer -------------------------------------------------------

TEST(CpuKernels, ReductionsMatchDoubleSums) {
  auto x = random_floats(100003, 25, -3.0f, 3.0f);
  double sum = 0.0, squares = 0.0;
  for (float v : x) sum += v, squares += double(v) * v;
  float out = 0.0f;
  cpu::sum_forward(&out, x.data(), int64_t(x.size()));
  EXPECT_NEAR(out, sum, 1e-6 * std::abs(sum) + 1e-3);
  cpu::squared_norm_forward(&out, x.data(), int64_t(x.size()));
  EXPECT_NEAR(out, squares, 1e-6 * squares);
  cpu::max_forward(&out, x.data(), int64_t(x.size()));
  EXPECT_EQ(out, *std::max_element(x.begin(), x.end()));
  cpu::max_forward(&out, x.data(), 0);
  EXPECT_EQ(out, -INFINITY);
}

TEST(CpuKernels, AdamWFollowsPyTorchsUpdateRule) {
  const int64_t n = 9;
  auto param = random_floats(n, 26), grad = random_floats(n, 27);
  std::vector<float> m(n, 0.0f), v(n, 0.0f);
  Vec p_ref = to_double(param), m_ref(n, 0.0), v_ref(n, 0.0);
  AdamWParams hp;
  hp.lr = 0.01f, hp.weight_decay = 0.1f, hp.beta1 = 0.8f, hp.beta2 = 0.95f, hp.eps = 1e-6f, hp.grad_scale = 0.5f;
  for (int64_t step = 1; step <= 3; ++step) {
    hp.step = step;
    cpu::adamw_update(param.data(), m.data(), v.data(), grad.data(), n, hp);
    for (size_t i = 0; i < size_t(n); ++i) {
      double g = 0.5 * grad[i];
      p_ref[i] -= 0.01 * 0.1 * p_ref[i];
      m_ref[i] = 0.8 * m_ref[i] + 0.2 * g;
      v_ref[i] = 0.95 * v_ref[i] + 0.05 * g * g;
      double m_hat = m_ref[i] / (1.0 - std::pow(0.8, double(step)));
      double v_hat = v_ref[i] / (1.0 - std::pow(0.95, double(step)));
      p_ref[i] -= 0.01 * m_hat / (std::sqrt(v_hat) + 1e-6);
    }
  }
  EXPECT_TRUE(all_close(param, p_ref, 1e-5, 1e-7));
  EXPECT_TRUE(all_close(m, m_ref, 1e-5, 1e-8));
  EXPECT_TRUE(all_close(v, v_ref, 1e-5, 1e-9));
}

// ---- random fills --------------------------------------------------------------------

TEST(CpuKernels, PhiloxFillsHaveTheRightMoments) {
  const int64_t n = 200000;
  std::vector<float> uniform(n), normal(n);
  cpu::uniform_fill(uniform.data(), n, 0, 42, 7, 0.0f, 1.0f);
  cpu::normal_fill(normal.data(), n, 0, 42, 7, 0.0f, 1.0f);
  double umean = 0.0, nmean = 0.0, nvar = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_GE(uniform[size_t(i)], 0.0f);
    ASSERT_LT(uniform[size_t(i)], 1.0f);
    umean += uniform[size_t(i)] / double(n);
    nmean += normal[size_t(i)] / double(n);
  }
  for (float v : normal) nvar += (v - nmean) * (v - nmean) / double(n);
  // Standard errors: 0.29/sqrt(n) = 6.5e-4 for the uniform mean, 2.2e-3 for the normal one.
  EXPECT_NEAR(umean, 0.5, 4e-3);
  EXPECT_NEAR(nmean, 0.0, 1e-2);
  EXPECT_NEAR(nvar, 1.0, 2e-2);
}

TEST(CpuKernels, PhiloxValueDependsOnlyOnTheElementIndex) {
  std::vector<float> whole(100), part(30);
  cpu::normal_fill(whole.data(), 100, 0, 1234, 99, 0.0f, 1.0f);
  cpu::normal_fill(part.data(), 30, 55, 1234, 99, 0.0f, 1.0f);
  for (int i = 0; i < 30; ++i) EXPECT_EQ(part[size_t(i)], whole[size_t(55 + i)]);
  std::vector<float> other(100);
  cpu::normal_fill(other.data(), 100, 0, 1234, 100, 0.0f, 1.0f);  // another stream (tensor name)
  EXPECT_NE(other, whole);
}

}  // namespace
}  // namespace sg
