// shardgrad's AVX-512 f32 GEMM (kernels/cpu/sgemm.h has the plan of its loops).
#include "kernels/cpu/sgemm.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/env_switch.h"
#include "kernels/error.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace sg::cpu {

#if defined(__AVX512F__)

namespace {

// The register tile: 12 rows x 32 columns of C = 24 of the 32 zmm registers,
// leaving room for B's two row vectors and A's broadcast value. Per step of k
// the kernel loads 2 vectors and 12 scalars for 24 FMAs.
constexpr int64_t kMr = 12, kNr = 32;
// Cache blocks, measured on the development machine: a kKc x kNr panel of
// B (64 KiB) and kMc x kKc of A (48 KiB) stay in L2 while a work item runs;
// B's kKc x kNc block (4 MiB) stays in L3. Small items (24 rows of C by 128
// columns) share the work evenly between threads even when C is small.
constexpr int64_t kKc = 512, kMc = 24, kNc = 2048;
constexpr int64_t kMo = 1536;  // rows of A packed at once, so a tall A (the LM head's gradient) needs no more
constexpr int64_t kPanelsPerItem = 4;
constexpr int64_t kParallelWork = int64_t(1) << 18;  // below this many multiply-adds, one thread

// Panels of kMr rows of A (rows i0 .. i0 + rows - 1, the inner dimension
// p0 ..): for each p, the kMr values A(i0 .. i0 + kMr - 1, p), rows past the
// matrix padded with zeros.
void pack_a_panel(float* out, const float* a, int64_t a_row, int64_t a_col, int64_t rows, int64_t kc) {
  if (rows < kMr) std::fill(out, out + kMr * kc, 0.0f);
  if (a_col == 1) {  // A's rows contiguous: read along each row
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t p = 0; p < kc; ++p) out[p * kMr + i] = a[i * a_row + p];
    }
  } else {
    for (int64_t p = 0; p < kc; ++p) {
      for (int64_t i = 0; i < rows; ++i) out[p * kMr + i] = a[i * a_row + p * a_col];
    }
  }
}

// Panels of kNr columns of B: for each p, the kNr values B(p, j0 .. j0 + kNr - 1).
void pack_b_panel(float* out, const float* b, int64_t b_row, int64_t b_col, int64_t kc, int64_t cols) {
  if (cols < kNr) std::fill(out, out + kNr * kc, 0.0f);
  if (b_col == 1) {  // B's rows contiguous: whole rows of the panel at once
    for (int64_t p = 0; p < kc; ++p) std::memcpy(out + p * kNr, b + p * b_row, size_t(cols) * sizeof(float));
  } else {
    for (int64_t j = 0; j < cols; ++j) {
      for (int64_t p = 0; p < kc; ++p) out[p * kNr + j] = b[p * b_row + j * b_col];
    }
  }
}

// One kMr x kNr tile: acc = A panel * B panel over kc, then C = acc (first
// pass of k) or C + acc (later passes), times alpha after the last pass.
// rows x cols of the tile are inside C.
void tile_kernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int64_t rows, int64_t cols,
                 bool first, bool last, float alpha) {
  __m512 acc[kMr][2];
  for (auto& row : acc) row[0] = row[1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kc; ++p) {
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 12
    for (int64_t i = 0; i < kMr; ++i) {
      const __m512 a_value = _mm512_set1_ps(a[i]);
      acc[i][0] = _mm512_fmadd_ps(a_value, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(a_value, b1, acc[i][1]);
    }
    a += kMr, b += kNr;
  }
  const __m512 scale = _mm512_set1_ps(alpha);
  const bool scaled = last && alpha != 1.0f;
  if (rows == kMr && cols == kNr) {
    for (int64_t i = 0; i < kMr; ++i) {
      for (int64_t half = 0; half < 2; ++half) {
        float* out = c + i * ldc + half * 16;
        __m512 value = first ? acc[i][half] : _mm512_add_ps(_mm512_loadu_ps(out), acc[i][half]);
        if (scaled) value = _mm512_mul_ps(value, scale);
        _mm512_storeu_ps(out, value);
      }
    }
    return;
  }
  // An edge tile: the same arithmetic, element by element, inside C only.
  alignas(64) float tile[kMr][kNr];
  for (int64_t i = 0; i < kMr; ++i) _mm512_store_ps(tile[i], acc[i][0]), _mm512_store_ps(tile[i] + 16, acc[i][1]);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      float value = first ? tile[i][j] : c[i * ldc + j] + tile[i][j];
      if (scaled) value *= alpha;
      c[i * ldc + j] = value;
    }
  }
}

}  // namespace

bool sgemm_enabled() {
  static const bool enabled = env_switch_on("SG_CPU_GEMM");
  return enabled;
}

bool sgemm_suits(int64_t n) { return sgemm_enabled() && (n % kNr == 0 || n >= 8 * kNr); }

void sgemm(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t a_row, int64_t a_col,
           const float* b, int64_t b_row, int64_t b_col, float* c, int64_t ldc) {
  // The calling thread's buffers (a caller may itself run GEMMs on several
  // threads): at most kMo x kKc of A (3 MiB) and kKc x kNc of B (4 MiB).
  thread_local std::vector<float> packed_a, packed_b;
  packed_a.resize(size_t((std::min(m, kMo) + kMr - 1) / kMr * kMr * std::min(k, kKc)));
  packed_b.resize(size_t((std::min(n, kNc) + kNr - 1) / kNr * kNr * std::min(k, kKc)));
  const bool parallel = m * n * k > kParallelWork;
  for (int64_t jc = 0; jc < n; jc += kNc) {
    const int64_t nc = std::min(kNc, n - jc), b_panels = (nc + kNr - 1) / kNr;
    for (int64_t ic = 0; ic < m; ic += kMo) {
      const int64_t mc = std::min(kMo, m - ic), a_panels = (mc + kMr - 1) / kMr;
      const int64_t row_blocks = (mc + kMc - 1) / kMc, groups = (b_panels + kPanelsPerItem - 1) / kPanelsPerItem;
      // C's rows ic .. ic + mc - 1 by columns jc .. jc + nc - 1, one pass of k at a time.
      for (int64_t pc = 0; pc < k; pc += kKc) {
        const int64_t kc = std::min(kKc, k - pc);
        const bool first = pc == 0, last = pc + kc == k;
        float* pa = packed_a.data();
        float* pb = packed_b.data();
#pragma omp parallel if (parallel)
        {
#pragma omp for schedule(static) nowait
          for (int64_t panel = 0; panel < b_panels; ++panel) {
            const int64_t j0 = panel * kNr;
            pack_b_panel(pb + panel * kNr * kc, b + pc * b_row + (jc + j0) * b_col, b_row, b_col, kc,
                         std::min(kNr, nc - j0));
          }
#pragma omp for schedule(static)
          for (int64_t panel = 0; panel < a_panels; ++panel) {
            const int64_t i0 = panel * kMr;
            pack_a_panel(pa + panel * kMr * kc, a + (ic + i0) * a_row + pc * a_col, a_row, a_col,
                         std::min(kMr, mc - i0), kc);
          }
          // Work items, row block by row block: a thread's items share their
          // A rows, which stay in its L2 while it walks B's panels.
#pragma omp for schedule(static)
          for (int64_t item = 0; item < row_blocks * groups; ++item) {
            const int64_t i_begin = item / groups * kMc, i_end = std::min(mc, i_begin + kMc);
            const int64_t panel_begin = item % groups * kPanelsPerItem;
            const int64_t panel_end = std::min(b_panels, panel_begin + kPanelsPerItem);
            for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
              const int64_t j0 = panel * kNr;
              for (int64_t i0 = i_begin; i0 < i_end; i0 += kMr) {
                tile_kernel(kc, pa + i0 * kc, pb + panel * kNr * kc, c + (ic + i0) * ldc + jc + j0, ldc,
                            std::min(kMr, mc - i0), std::min(kNr, nc - j0), first, last, alpha);
              }
            }
          }
        }
      }
    }
  }
}

#else  // no AVX-512: Eigen's GEMM runs (kernels/cpu/matmul.cpp)

bool sgemm_enabled() { return false; }

bool sgemm_suits(int64_t) { return false; }

void sgemm(int64_t, int64_t, int64_t, float, const float*, int64_t, int64_t, const float*, int64_t, int64_t, float*,
           int64_t) {
  SG_FAIL("cpu::sgemm: this build has no AVX-512 (check sgemm_enabled() first; Eigen's GEMM is the one to call)");
}

#endif

}  // namespace sg::cpu
