// Internal to kernels/cuda: Hopper's warpgroup-level matrix multiply (PTX
// wgmma.mma_async m64n64k16, bf16 or f16 inputs, f32 sums), for kernels
// built for sm_90a (the arch-specific target; kernels/CMakeLists.txt builds
// them alone for it).
//
// Why it is faster than mma.sync: a warpgroup (4 warps, 128 threads) makes
// a 64 x 64 product in one instruction, and its B operand (and A, if it
// comes from shared memory) is read by the tensor cores straight from
// shared memory, once for the 64 rows. With mma.sync each warp reads its
// own copy of B through ldmatrix into registers: at GPT-2's attention
// shapes the four warps' ldmatrix traffic, not the multiplies, bounds the
// kernels (docs/performance.md). And the instruction is asynchronous:
// issued, committed as a group, waited for.
//
// The operands in shared memory follow the layout without swizzling: the
// matrix is cut into core matrices of 8 rows of 16 bytes, each 128
// contiguous bytes, and a descriptor gives the byte distance from one core
// matrix to the next along K (LBO) and along M or N (SBO).
// tools/cuda_emu/wgmma.h spells out where each element lies, and emulates
// the instruction. The accumulators are mma.sync's (mma.cuh), four warps'
// worth, so a kernel's softmax code works on either.
//
// Read next: kernels/cuda/flash_attention_wgmma.cu.
#pragma once

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/float_types.cuh"

namespace sg::cuda {

// The descriptor's bits: start address, LBO and SBO (each shifted right by
// 4), no swizzle, base offset 0.
__host__ __device__ constexpr uint64_t matrix_descriptor(uint32_t shared_address, uint32_t lbo, uint32_t sbo) {
  return uint64_t((shared_address & 0x3ffffu) >> 4) | uint64_t((lbo & 0x3ffffu) >> 4) << 16 |
         uint64_t((sbo & 0x3ffffu) >> 4) << 32;
}

// An operand in shared memory. (The emulator resolves `start` itself, and
// its descriptor's address field is 0.)
struct SharedOperand {
  const void* start;
  uint64_t desc;
};

// k_step / mn_step: bytes from one core matrix to the next along K / along
// M or N. Both K-major and MN-major operands without swizzling take LBO
// along K and SBO along M or N (tools/cuda_emu/wgmma.h).
__device__ __forceinline__ SharedOperand shared_operand(const void* start, uint32_t k_step, uint32_t mn_step) {
#ifdef SG_CUDA_EMULATOR
  return SharedOperand{start, matrix_descriptor(0, k_step, mn_step)};
#else
  return SharedOperand{start, matrix_descriptor(uint32_t(__cvta_generic_to_shared(start)), k_step, mn_step)};
#endif
}

// Whether this compilation has wgmma (device code for sm_90a, or the emulator).
#if defined(SG_CUDA_EMULATOR) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SG_WGMMA_DEVICE 1
#endif

// Orders this thread's earlier register writes before the wgmma that
// follows reads them (wgmma.fence), as PTX requires before a warpgroup's
// first wgmma and whenever its accumulators or A registers were written.
__device__ __forceinline__ void wgmma_fence() {
#if defined(SG_CUDA_EMULATOR)
#elif defined(SG_WGMMA_DEVICE)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void wgmma_commit() {
#if defined(SG_CUDA_EMULATOR)
  ::sg_emu::wgmma_commit();
#elif defined(SG_WGMMA_DEVICE)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

// Waits until at most Pending committed groups of this thread are in flight.
template <int Pending>
__device__ __forceinline__ void wgmma_wait() {
#if defined(SG_CUDA_EMULATOR)
  ::sg_emu::wgmma_wait(Pending);
#elif defined(SG_WGMMA_DEVICE)
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(Pending) : "memory");
#endif
}

// Shared-memory writes by ordinary stores and cp.async become visible to
// wgmma's reads (the "async proxy") only after this fence; then a barrier.
__device__ __forceinline__ void fence_shared_for_wgmma() {
#if defined(SG_CUDA_EMULATOR)
  ::sg_emu::fence_proxy_async();  // the emulator checks each wgmma's shared operands against this fence
#elif defined(SG_WGMMA_DEVICE)
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Keeps the compiler from moving reads or writes of these registers across
// a wgmma or its wait: an in-flight wgmma owns its accumulators and A
// registers, which the compiler cannot know (CUTLASS's
// warpgroup_fence_operand does the same).
template <typename R, int N>
__device__ __forceinline__ void hold_registers(R (&r)[N]) {
  static_assert(std::is_same_v<R, float> || std::is_same_v<R, uint32_t>, "hold_registers: f32 or b32 registers");
#if defined(SG_CUDA_EMULATOR)
  (void)r;  // the emulator's wgmma lands its results at the wait, in program order
#else
#pragma unroll
  for (int i = 0; i < N; ++i) {
    if constexpr (std::is_same_v<R, float>) asm volatile("" : "+f"(r[i])::"memory");
    else asm volatile("" : "+r"(r[i])::"memory");
  }
#endif
}

#define SG_WGMMA_D16 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}"
#define SG_WGMMA_D16_OPERANDS(d)                                                                                     \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),        \
      "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
#define SG_WGMMA_D32                                                                                           \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, " \
  "%23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define SG_WGMMA_D32_OPERANDS(d) SG_WGMMA_D16_OPERANDS(d), \
  "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),            \
      "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
// One wgmma with both operands in shared memory, K-major: D the
// accumulators' operand list, then the operand numbers of A's and B's
// descriptors and of `accumulate` (the predicate p).
#define SG_WGMMA_SS(shape, type, D, OPERANDS, A, B, ACC, d)                                            \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " ACC ", 0;\n"                                       \
               "wgmma.mma_async.sync.aligned." shape ".f32." type "." type " " D ", " A ", " B ", p, 1, 1, 0, 0;\n}\n" \
               : OPERANDS(d)                                                                              \
               : "l"(a.desc), "l"(b.desc), "r"(int(accumulate)))

// d (64 x N over the warpgroup; this thread's N / 2) = A B (+ d if
// accumulate), A (64 x 16) and B (16 x N, as N rows of K) both K-major in
// shared memory, N 32 or 64. Issued, not waited for.
template <typename T, int N>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], SharedOperand a, SharedOperand b, bool accumulate) {
  static_assert(N == 32 || N == 64, "wgmma_ss: N is 32 or 64");
#if defined(SG_CUDA_EMULATOR)
  ::sg_emu::wgmma_m64nNk16<T, N>(d, ::sg_emu::WgmmaOperands{nullptr, a.start, a.desc, b.start, b.desc, false},
                                 accumulate);
#elif defined(SG_WGMMA_DEVICE)
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  if constexpr (N == 64 && kBf16) SG_WGMMA_SS("m64n64k16", "bf16", SG_WGMMA_D32, SG_WGMMA_D32_OPERANDS, "%32", "%33", "%34", d);
  else if constexpr (N == 64) SG_WGMMA_SS("m64n64k16", "f16", SG_WGMMA_D32, SG_WGMMA_D32_OPERANDS, "%32", "%33", "%34", d);
  else if constexpr (kBf16) SG_WGMMA_SS("m64n32k16", "bf16", SG_WGMMA_D16, SG_WGMMA_D16_OPERANDS, "%16", "%17", "%18", d);
  else SG_WGMMA_SS("m64n32k16", "f16", SG_WGMMA_D16, SG_WGMMA_D16_OPERANDS, "%16", "%17", "%18", d);
#else
  __trap();  // not built for sm_90a: the host launches wgmma kernels only where it was
#endif
}

// d (64 x 64) (+)= A B with A from registers (this warp's 16 rows, as
// mma.sync's A fragment) and B (16 x 64) N-major in shared memory: 16 rows
// of K, each 64 values of N (imm-trans-b = 1).
template <typename T>
__device__ __forceinline__ void wgmma_rs_n_major(float (&d)[32], const uint32_t (&a)[4], SharedOperand b,
                                                 bool accumulate) {
#if defined(SG_CUDA_EMULATOR)
  ::sg_emu::wgmma_m64nNk16<T, 64>(d, ::sg_emu::WgmmaOperands{a, nullptr, 0, b.start, b.desc, true}, accumulate);
#elif defined(SG_WGMMA_DEVICE)
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " SG_WGMMA_D32
                 ", {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
                 : SG_WGMMA_D32_OPERANDS(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b.desc), "r"(int(accumulate)));
  } else {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 " SG_WGMMA_D32
                 ", {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
                 : SG_WGMMA_D32_OPERANDS(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b.desc), "r"(int(accumulate)));
  }
#else
  __trap();
#endif
}

#undef SG_WGMMA_SS
#undef SG_WGMMA_D16
#undef SG_WGMMA_D16_OPERANDS
#undef SG_WGMMA_D32
#undef SG_WGMMA_D32_OPERANDS

}  // namespace sg::cuda
