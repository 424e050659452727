// The CPU GEMM against a naive f64 triple loop: all four transpose cases, odd
// sizes, padded leading dimensions, batches, alpha/beta, both backward GEMMs,
// and sizes past the f32 kernel's cache blocks.
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/sgemm.h"
#include "tests/test_util.h"

namespace sg {
namespace {

using test::all_close;
using test::random_floats;

// Element (i, j) of op(X) for X stored row-major with row stride ld.
double op_at(const std::vector<float>& x, int64_t offset, int64_t ld, bool trans, int64_t i, int64_t j) {
  return trans ? x[size_t(offset + j * ld + i)] : x[size_t(offset + i * ld + j)];
}

std::vector<double> gemm_reference(const std::vector<float>& a, const std::vector<float>& b, std::vector<float> c,
                                   const GemmShape& s) {
  std::vector<double> out(c.begin(), c.end());
  for (int64_t batch = 0; batch < s.batch; ++batch)
    for (int64_t i = 0; i < s.m; ++i)
      for (int64_t j = 0; j < s.n; ++j) {
        double dot = 0.0;
        for (int64_t p = 0; p < s.k; ++p) {
          dot += op_at(a, batch * s.stride_a, s.lda, s.trans_a, i, p) * op_at(b, batch * s.stride_b, s.ldb, s.trans_b, p, j);
        }
        size_t index = size_t(batch * s.stride_c + i * s.ldc + j);
        out[index] = s.alpha * dot + (s.beta == 0.0f ? 0.0 : s.beta * double(c[index]));
      }
  return out;
}

class CpuGemm : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(CpuGemm, MatchesNaiveProductWithPaddingBatchesAndBeta) {
  auto [trans_a, trans_b] = GetParam();
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {7, 13, 5}, {33, 17, 64}, {65, 3, 130}}) {
    GemmShape s;
    s.m = m, s.n = n, s.k = k, s.trans_a = trans_a, s.trans_b = trans_b;
    s.lda = (trans_a ? m : k) + 3;  // padded rows: a slice of a wider matrix
    s.ldb = (trans_b ? k : n) + 1;
    s.ldc = n + 2;
    s.batch = 3;
    s.stride_a = (trans_a ? k : m) * s.lda, s.stride_b = (trans_b ? n : k) * s.ldb, s.stride_c = m * s.ldc;
    s.alpha = 0.75f, s.beta = 0.5f;
    auto a = random_floats(size_t(s.batch * s.stride_a), 1), b = random_floats(size_t(s.batch * s.stride_b), 2);
    auto c = random_floats(size_t(s.batch * s.stride_c), 3);
    auto expected = gemm_reference(a, b, c, s);
    cpu::matmul_forward(c.data(), a.data(), b.data(), s);
    EXPECT_TRUE(all_close(c, expected, 1e-5, 1e-5)) << m << "x" << n << "x" << k;
  }
}

TEST_P(CpuGemm, BackwardAccumulatesBothGradients) {
  auto [trans_a, trans_b] = GetParam();
  GemmShape s = GemmShape::dense(6, 5, 4, trans_a, trans_b, /*batch=*/2);
  auto a = random_floats(size_t(2 * s.stride_a), 4), b = random_floats(size_t(2 * s.stride_b), 5);
  auto dc = random_floats(size_t(2 * s.stride_c), 6);
  std::vector<float> da(a.size(), 1.0f), db(b.size(), 1.0f);
  cpu::matmul_backward(da.data(), db.data(), dc.data(), a.data(), b.data(), s);
  // Reference: dC/dA_stored[x] = sum over (i, j) of dC[i, j] * d(op(A) op(B))[i, j] / dA_stored[x].
  std::vector<double> da_ref(a.size(), 1.0), db_ref(b.size(), 1.0);
  for (int64_t batch = 0; batch < 2; ++batch)
    for (int64_t i = 0; i < s.m; ++i)
      for (int64_t j = 0; j < s.n; ++j)
        for (int64_t p = 0; p < s.k; ++p) {
          double g = dc[size_t(batch * s.stride_c + i * s.n + j)];
          size_t ai = size_t(batch * s.stride_a + (trans_a ? p * s.lda + i : i * s.lda + p));
          size_t bi = size_t(batch * s.stride_b + (trans_b ? j * s.ldb + p : p * s.ldb + j));
          da_ref[ai] += g * b[bi];
          db_ref[bi] += g * a[ai];
        }
  EXPECT_TRUE(all_close(da, da_ref, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(db, db_ref, 1e-5, 1e-5));
}

// Past the f32 kernel's blocks (kernels/cpu/sgemm.h: 12-row panels, 24-row
// blocks, 1536 rows and 2048 columns packed at once, 512 of k a pass): edge
// tiles on every side, two column blocks, two row blocks, three passes of k,
// alpha after the last, and beta's add.
TEST_P(CpuGemm, MatchesNaiveProductPastTheKernelsBlocks) {
  auto [trans_a, trans_b] = GetParam();
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{29, 2090, 1030}, {200, 96, 600}, {1601, 64, 520}}) {
    GemmShape s = GemmShape::dense(m, n, k, trans_a, trans_b);
    s.lda += 5;  // padded rows: a slice of a wider matrix
    s.alpha = 0.75f;
    const auto a = random_floats(size_t((trans_a ? k : m) * s.lda), 8), b = random_floats(size_t(k * n), 9);
    for (float beta : {0.0f, 0.5f}) {
      s.beta = beta;
      auto c = random_floats(size_t(m * n), 10);
      const auto expected = gemm_reference(a, b, c, s);
      cpu::matmul_forward(c.data(), a.data(), b.data(), s);
      EXPECT_TRUE(all_close(c, expected, 1e-5, 1e-4)) << m << "x" << n << "x" << k << ", beta " << beta;
    }
  }
}

// matmul gives the kernel only the widths it suits (65 columns go to Eigen),
// but it computes any width: here 65 (a panel of 1 column) and 33, transposed B.
TEST(CpuGemmEdges, OwnKernelComputesAnyWidth) {
  if (!cpu::sgemm_enabled()) GTEST_SKIP() << "this build has no AVX-512 f32 kernel (Eigen's GEMM runs instead)";
  for (int64_t n : {65, 33}) {
    GemmShape s = GemmShape::dense(50, n, 700, /*trans_a=*/false, /*trans_b=*/true);
    s.alpha = 2.0f;
    const auto a = random_floats(size_t(50 * 700), 11), b = random_floats(size_t(n * 700), 12);
    std::vector<float> c(size_t(50 * n), std::nanf(""));  // every element written, none read
    const auto expected = gemm_reference(a, b, c, s);
    cpu::sgemm(50, n, 700, 2.0f, a.data(), 700, 1, b.data(), 1, 700, c.data(), n);
    EXPECT_TRUE(all_close(c, expected, 1e-5, 1e-4)) << n << " columns";
  }
  EXPECT_FALSE(cpu::sgemm_suits(65));
  EXPECT_TRUE(cpu::sgemm_suits(96));
  EXPECT_TRUE(cpu::sgemm_suits(50304));
}

INSTANTIATE_TEST_SUITE_P(AllTransposes, CpuGemm,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()));

TEST(CpuGemmEdges, BetaZeroIgnoresGarbageInC) {
  GemmShape s = GemmShape::dense(2, 2, 3);
  std::vector<float> a = {1, 2, 3, 4, 5, 6}, b = {1, 0, 0, 1, 1, 1};
  std::vector<float> c(4, std::numeric_limits<float>::quiet_NaN());
  cpu::matmul_forward(c.data(), a.data(), b.data(), s);
  EXPECT_EQ(c, (std::vector<float>{4, 5, 10, 11}));
}

TEST(CpuGemmEdges, EmptyInnerDimensionScalesC) {
  GemmShape s = GemmShape::dense(2, 2, 0);
  s.beta = 2.0f;
  std::vector<float> c = {1, 2, 3, 4};
  cpu::matmul_forward<float>(c.data(), nullptr, nullptr, s);
  EXPECT_EQ(c, (std::vector<float>{2, 4, 6, 8}));
}

TEST(CpuGemmEdges, BiasAddAndItsBackward) {
  const int64_t rows = 37, cols = 130;  // cols spans more than one 64-column band
  auto out = random_floats(rows * cols, 7), bias = random_floats(cols, 8);
  auto before = out;
  cpu::bias_add_forward(out.data(), bias.data(), rows, cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) EXPECT_EQ(out[size_t(r * cols + c)], before[size_t(r * cols + c)] + bias[size_t(c)]);
  std::vector<float> dbias(cols, 1.0f);
  cpu::bias_add_backward(dbias.data(), before.data(), rows, cols);
  std::vector<double> expected(cols, 1.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) expected[size_t(c)] += before[size_t(r * cols + c)];
  EXPECT_TRUE(all_close(dbias, expected, 1e-5, 1e-5));
}

}  // namespace
}  // namespace sg
