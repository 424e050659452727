// shardgrad's own f32 GEMM for CPUs with AVX-512, in the layout of BLIS
// and GotoBLAS: the operands are copied ("packed") into the order the inner
// kernel reads them, in blocks that stay in the caches, and a 12 x 32
// register tile of C is computed at a time. On the 2-core Zen 4 development
// machine `bench_gemm --device cpu` times it 1.2x faster than Eigen's GEMM at
// (b)'s qkv and fc shapes and 1.5x at GPT-2's LM head (docs/performance.md,
// "CPU GEMM"; SG_CPU_GEMM=0 runs Eigen's for the comparison).
//
// Loops, outermost first (sizes in kernels/cpu/sgemm.cpp):
//   jc: columns of C and B in blocks of kNc        B block (kc x nc) sits in L3
//   ic: rows of C and A in blocks of kMo           bounds the packed A
//   pc: the inner dimension in blocks of kKc       one block's sum per pass
//     pack B's block: panels of 32 columns, each row of a panel contiguous
//     pack A's rows:  panels of 12 rows, each column of a panel contiguous
//     (i, j) items: kMc rows of C by 4 panels of B, shared out among threads
//       kernel: 12 x 32 tile += A panel (12 x kc) * B panel (kc x 32)
// Each element of C sums its k terms in one order whatever the number of
// threads (the threads split C, never k), so results have the same bits on
// 1 or 16 threads, as the rest of the CPU kernels do (docs/tensor.md).
//
// The packed copies live in buffers of the calling thread, kept between
// calls and outside the allocator's counts (as Eigen's were): at most 3 MiB
// of A and 4 MiB of B per thread that calls it.
//
// Read next: kernels/cpu/matmul.cpp (which calls it for f32).
#pragma once

#include <cstdint>

namespace sg::cpu {

// Whether this build has the kernel (compiled with AVX-512F), and it has not
// been switched off with SG_CPU_GEMM=0 (Eigen's GEMM then runs instead).
bool sgemm_enabled();

// Whether a product with n columns should take it: enabled, and n fills its
// 32-column panels (a multiple of 32, or wide enough that the last panel's
// padding costs little). A GEMM of 65 columns, the character model's LM head,
// would waste a third of the kernel on padding: Eigen's runs it faster.
bool sgemm_suits(int64_t n);

// C = alpha * A B, overwriting C (m x n, row stride ldc). Element (i, p) of
// A is a[i * a_row + p * a_col] and (p, j) of B is b[p * b_row + j * b_col],
// so either may be a transposed view. m, n, k >= 1. Only with sgemm_enabled()
// (any n works; sgemm_suits says where it pays).
void sgemm(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t a_row, int64_t a_col,
           const float* b, int64_t b_row, int64_t b_col, float* c, int64_t ldc);

}  // namespace sg::cpu
