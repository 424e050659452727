// The CPU kernels that sum across rows or across a whole buffer, and GEMM,
// give the same bits on any number of OpenMP threads, and the same bits every
// run. A GPU machine's 16 cores found the first counterexample: LayerNorm's
// dweight added per-thread partials in the order the threads finished
// (kernels/cpu/fixed_chunks.h).
#include <gtest/gtest.h>
#include <omp.h>

#include <cstring>
#include <vector>

#include "kernels/cpu/loss.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/normalization.h"
#include "kernels/cpu/reduce.h"
#include "tests/test_util.h"

namespace sg {
namespace {

using test::random_floats;

// Every output of the row- and buffer-wide sums, concatenated.
std::vector<float> all_sums() {
  constexpr int64_t N = 300, C = 37, n = 200'000;  // N: 10 row blocks; n: 7 chunks
  const std::vector<float> x = random_floats(N * C, 1), dy = random_floats(N * C, 2), w = random_floats(C, 3);
  std::vector<float> mean(N), rstd(N), y(N * C), dx(N * C, 0.0f), dw(C, 0.0f), db(C, 0.0f), dbias(C, 0.0f);
  const std::vector<float> zeros(C, 0.0f);
  cpu::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), zeros.data(), N, C);
  cpu::layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), mean.data(), rstd.data(),
                          N, C);
  cpu::bias_add_backward(dbias.data(), dy.data(), N, C);
  std::vector<int32_t> ids(N);
  for (int64_t i = 0; i < N; ++i) ids[size_t(i)] = int32_t(i * 7 % 11);  // each row of the table many times
  std::vector<float> dtable(11 * C, 0.0f);
  cpu::embedding_backward(dtable.data(), dy.data(), ids.data(), N, C);
  const std::vector<float> big = random_floats(n, 4);
  float sum = 0, norm = 0;
  cpu::sum_forward(&sum, big.data(), n);
  cpu::squared_norm_forward(&norm, big.data(), n);
  // A GEMM in two column blocks and three passes of k (kernels/cpu/sgemm.h), with a weight gradient's beta.
  GemmShape g = GemmShape::dense(150, 2090, 1030, /*trans_a=*/true);
  g.beta = 1.0f;
  const std::vector<float> ga = random_floats(150 * 1030, 5), gb = random_floats(1030 * 2090, 6);
  std::vector<float> gc = random_floats(150 * 2090, 7);
  cpu::matmul_forward(gc.data(), ga.data(), gb.data(), g);
  std::vector<float> out = dx;
  for (const auto* part : {&dw, &db, &dbias, &dtable, &gc}) out.insert(out.end(), part->begin(), part->end());
  out.push_back(sum);
  out.push_back(norm);
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(CpuDeterminism, SumsGiveTheSameBitsOnAnyNumberOfThreads) {
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<float> serial = all_sums();
  for (int t : {2, 3, 7, 16}) {
    omp_set_num_threads(t);
    for (int run = 0; run < 5; ++run) {  // and the same every run: the old lock order changed between runs
      EXPECT_TRUE(same_bits(all_sums(), serial)) << t << " threads, run " << run;
    }
  }
  omp_set_num_threads(threads);
}

}  // namespace
}  // namespace sg
