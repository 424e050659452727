// The WMMA API (nvcuda::wmma, CUDA's <mma.h>) for the emulator: tensor-core
// matrix fragments of a warp, computed on the CPU. <mma.h> declares nothing
// for a host compiler, so device.h includes this instead.
//
// The model is the GPU's: a fragment is spread over the warp's 32 lanes.
// Here every lane's fragment has room for the whole tile, but a lane loads,
// stores and owns only its share (element e = row * cols + col where
// e % 32 == lane). mma_sync gathers the shares of a, b and c from all lanes
// and computes the lane's share of d. So, as on the GPU:
//  - every lane must call load/store/mma (a missing lane is a barrier that
//    never opens, reported);
//  - the *_sync calls wait for all lanes on entry, as the CUDA documentation
//    says, and no more (so a missing __syncwarp right before a load, which
//    real code needs for ordering, goes unseen here);
//  - memory a store wrote is complete only after a __syncwarp: a lane that
//    reads it sooner finds the other lanes' shares missing.
// Pointers must be 256-bit aligned and ldm a multiple of 8 (16-bit
// elements) or 4 (float), as the hardware requires. Sums are in float.
#pragma once

#include <cstdint>
#include <type_traits>

#include "kernels/error.h"
#include "tools/cuda_emu/simt.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulator has the 16x16x16 shape only");
  static constexpr int rows = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int cols = std::is_same_v<Use, matrix_a> ? K : N;
  static constexpr int num_elements = rows * cols;  // room for the tile; this lane owns every 32nd element
  T x[num_elements];
};

namespace emu {

inline float to_float(float x) { return x; }
inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
inline float to_float(__half x) { return __half2float(x); }
template <typename T>
T from_float(float x) {
  if constexpr (std::is_same_v<T, float>) return x;
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(x);
  else return __float2half_rn(x);
}

inline bool owns(int element) { return element % 32 == ::sg_emu::lane_id(); }

template <typename T>
void check_operands(const void* pointer, unsigned ldm) {
  SG_CHECK(reinterpret_cast<uintptr_t>(pointer) % 32 == 0, "CUDA emulator: a WMMA load or store at ", pointer,
           ", which is not 256-bit aligned");
  SG_CHECK(ldm % (16 / sizeof(T)) == 0, "CUDA emulator: WMMA ldm ", ldm, " is not a multiple of ", 16 / sizeof(T));
}

inline void enter() { ::sg_emu::sync_warp(0xffffffffu); }  // the *_sync calls wait for the whole warp

}  // namespace emu

template <typename Use, int M, int N, int K, typename T, typename Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, T value) {
  for (T& x : f.x) x = value;
}

// matrix_a / matrix_b: the layout is the fragment's.
template <typename Use, int M, int N, int K, typename T, typename Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const T* pointer, unsigned ldm) {
  using Fragment = fragment<Use, M, N, K, T, Layout>;
  emu::check_operands<T>(pointer, ldm);
  emu::enter();
  for (int e = 0; e < Fragment::num_elements; ++e) {
    if (!emu::owns(e)) continue;
    const int r = e / Fragment::cols, c = e % Fragment::cols;
    f.x[e] = std::is_same_v<Layout, row_major> ? pointer[r * ldm + c] : pointer[c * ldm + r];
  }
}

// accumulator: the layout is the call's.
template <int M, int N, int K, typename T>
void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* pointer, unsigned ldm, layout_t layout) {
  emu::check_operands<T>(pointer, ldm);
  emu::enter();
  for (int e = 0; e < M * N; ++e) {
    if (!emu::owns(e)) continue;
    const int r = e / N, c = e % N;
    f.x[e] = layout == mem_row_major ? pointer[r * ldm + c] : pointer[c * ldm + r];
  }
}

template <int M, int N, int K, typename T>
void store_matrix_sync(T* pointer, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t layout) {
  emu::check_operands<T>(pointer, ldm);
  emu::enter();
  for (int e = 0; e < M * N; ++e) {
    if (!emu::owns(e)) continue;
    const int r = e / N, c = e % N;
    (layout == mem_row_major ? pointer[r * ldm + c] : pointer[c * ldm + r]) = f.x[e];
  }
}

// d = a b + c, d and c accumulators (d may be c).
template <int M, int N, int K, typename A, typename LayoutA, typename LayoutB, typename TC>
void mma_sync(fragment<accumulator, M, N, K, TC>& d, const fragment<matrix_a, M, N, K, A, LayoutA>& a,
              const fragment<matrix_b, M, N, K, A, LayoutB>& b, const fragment<accumulator, M, N, K, TC>& c) {
  struct Operands {
    const fragment<matrix_a, M, N, K, A, LayoutA>* a;
    const fragment<matrix_b, M, N, K, A, LayoutB>* b;
    const fragment<accumulator, M, N, K, TC>* c;
  };
  const Operands mine{&a, &b, &c};
  const void* const* lanes = ::sg_emu::gather_from_warp(&mine);
  auto lane_of = [&](int element) { return static_cast<const Operands*>(lanes[element % 32]); };
  TC result[M * N];
  for (int e = 0; e < M * N; ++e) {
    if (!emu::owns(e)) continue;
    const int r = e / N, col = e % N;
    float sum = emu::to_float(lane_of(e)->c->x[e]);
    for (int k = 0; k < K; ++k) {
      sum += emu::to_float(lane_of(r * K + k)->a->x[r * K + k]) * emu::to_float(lane_of(k * N + col)->b->x[k * N + col]);
    }
    result[e] = emu::from_float<TC>(sum);
  }
  ::sg_emu::release_warp();  // every lane has read the others' shares
  for (int e = 0; e < M * N; ++e) {
    if (emu::owns(e)) d.x[e] = result[e];
  }
}

}  // namespace nvcuda::wmma
