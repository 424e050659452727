// Internal to kernels/cuda: the three float storage types as template
// parameters, with load (to f32) and store (round from f32), and a switch from
// DType to a typed call.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "kernels/dtype.h"
#include "kernels/error.h"

namespace sg::cuda {

__device__ __forceinline__ float load(float x) { return x; }
__device__ __forceinline__ float load(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float load(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T store(float x);
template <>
__device__ __forceinline__ float store<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 store<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ __half store<__half>(float x) { return __float2half_rn(x); }

// N adjacent values moved as one access: N = 1 is a plain element, N =
// 16 / sizeof(T) a 16-byte vector (a 2-byte load per lane keeps too few bytes
// in flight to fill HBM; 16 bytes per lane does).
template <typename T, int N>
struct alignas(N * sizeof(T)) Vec {
  T v[N];
};
template <typename T>
constexpr int kVec16 = int(16 / sizeof(T));

inline bool all_aligned16(std::initializer_list<const void*> pointers) {
  for (const void* p : pointers) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
}

// Calls fn(std::integral_constant<int, N>{}) for rows of C values of T: N
// values per access, 16 bytes where C and every buffer allow it, else 1.
template <typename T, typename Fn>
void with_units(int64_t C, std::initializer_list<const void*> buffers, Fn&& fn) {
  if (C % kVec16<T> == 0 && all_aligned16(buffers)) fn(std::integral_constant<int, kVec16<T>>{});
  else fn(std::integral_constant<int, 1>{});
}

// Calls fn(T{}) with T the storage type of a floating dtype.
template <typename Fn>
void with_float_type(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::f32: fn(float{}); return;
    case DType::bf16: fn(__nv_bfloat16{}); return;
    case DType::f16: fn(__half{}); return;
    default: SG_FAIL("a CUDA float kernel got dtype ", dtype_name(dtype), "; expected f32, bf16 or f16");
  }
}

}  // namespace sg::cuda
