// The emulator's test kernels (tests/cuda_emu/simt_kernels.h), written as
// any kernel in kernels/cuda is and translated the same way.
#include "tests/cuda_emu/simt_kernels.h"

#include <cuda_runtime.h>
#include <mma.h>

#include <cstring>
#include <type_traits>

#include "kernels/cuda/async_copy.cuh"
#include "kernels/cuda/wgmma.cuh"

namespace sg::emu_test {
namespace {

// A shared-memory tree: correct only if every level waits for the one before.
__global__ void block_sum_kernel(float* out, const float* in) {
  __shared__ float partial[1024];
  partial[threadIdx.x] = in[blockIdx.x * blockDim.x + threadIdx.x];
  __syncthreads();
  for (unsigned width = blockDim.x / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}

__global__ void warp_sum_kernel(float* out, int lanes_alive) {
  if (int(threadIdx.x) >= lanes_alive) return;
  float value = float(threadIdx.x);
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  out[threadIdx.x] = value;
}

__global__ void thread_id_kernel(int32_t* out) {
  const unsigned block = blockIdx.y * gridDim.x + blockIdx.x;
  const unsigned thread = threadIdx.y * blockDim.x + threadIdx.x;
  out[block * blockDim.x * blockDim.y + thread] = int32_t(block * 1000 + thread);
}

__global__ void split_barrier_kernel(int32_t* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncwarp();
  }
  out[threadIdx.x] = 1;
}

__global__ void reverse_kernel(float* out, const float* in, int n) {
  extern __shared__ float buffer[];
  for (int i = threadIdx.x; i < n; i += blockDim.x) buffer[i] = in[i];
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = buffer[n - 1 - i];
}

// The same, for launches past 48 KiB (a kernel of its own: what
// cudaFuncSetAttribute allows it lasts for the process).
__global__ void large_reverse_kernel(float* out, const float* in, int n) {
  extern __shared__ float buffer[];
  for (int i = threadIdx.x; i < n; i += blockDim.x) buffer[i] = in[i];
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = buffer[n - 1 - i];
}

__global__ void shared_overrun_kernel(float* out, int index) {
  extern __shared__ float buffer[];
  out[0] = buffer[index];
}

// Thread i writes slot i and reads slot i - 1 with no __syncthreads between:
// a race, which only the order in which the threads run decides.
__global__ void racy_shift_kernel(float* out) {
  __shared__ float slots[64];
  slots[threadIdx.x] = float(threadIdx.x);
  out[threadIdx.x] = threadIdx.x == 0 ? -1.0f : slots[threadIdx.x - 1];
}

__global__ void big_shared_kernel(float* out) {
  __shared__ float first[8192];
  __shared__ float second[8192];
  first[threadIdx.x] = second[threadIdx.x] = 1.0f;
  out[0] = first[0] + second[0];
}

__global__ void static_overrun_kernel(float* out, int index) {
  __shared__ float slots[16];
  slots[threadIdx.x == 0 ? index : threadIdx.x] = 1.0f;
  out[0] = slots[1];
}

// out[0..3]: a 16-byte cp.async's destination before the wait; out[4..7]:
// after it; out[8..11]: a zero-filling copy's destination after its wait.
__global__ void async_copy_kernel(float* out, const float* in) {
  __shared__ alignas(16) float copied[4];
  __shared__ alignas(16) float zeroed[4];
  for (int i = 0; i < 4; ++i) copied[i] = zeroed[i] = -1.0f;
  sg::cuda::async_copy<16>(copied, in, true);
  sg::cuda::async_copy<16>(zeroed, in, false);
  sg::cuda::async_commit();
  for (int i = 0; i < 4; ++i) out[i] = copied[i];
  sg::cuda::async_wait<0>();
  for (int i = 0; i < 4; ++i) {
    out[4 + i] = copied[i];
    out[8 + i] = zeroed[i];
  }
}

// A warpgroup (or `threads` of one) makes acc = A B twice, A and B all
// ones (every sum 16), the second adding to the first: out[2 t] is thread
// t's acc[0] before the wait, out[2 t + 1] after it (if it waits).
__global__ void wgmma_wait_kernel(float* out, bool wait) {
  __shared__ alignas(128) __nv_bfloat16 ones[64 * 16];
  for (int i = threadIdx.x; i < 64 * 16; i += blockDim.x) ones[i] = __float2bfloat16(1.0f);
  sg::cuda::fence_shared_for_wgmma();
  __syncthreads();
  float acc[32];
  for (int i = 0; i < 32; ++i) acc[i] = -1.0f;
  const sg::cuda::SharedOperand operand = sg::cuda::shared_operand(ones, 1024, 128);
  sg::cuda::wgmma_fence();
  sg::cuda::wgmma_ss<__nv_bfloat16, 64>(acc, operand, operand, false);
  sg::cuda::wgmma_ss<__nv_bfloat16, 64>(acc, operand, operand, true);
  sg::cuda::wgmma_commit();
  out[2 * threadIdx.x] = acc[0];
  if (!wait) return;
  sg::cuda::wgmma_wait<0>();
  out[2 * threadIdx.x + 1] = acc[0];
}

// B (all ones) comes into shared memory by cp.async, 16 bytes a thread;
// the hazards are wgmma_with_hazard's (simt_kernels.h).
__global__ void wgmma_hazard_kernel(float* out, const __nv_bfloat16* all_ones, int hazard) {
  __shared__ alignas(128) __nv_bfloat16 ones[16 * 64];
  sg::cuda::async_copy<16>(ones + 8 * threadIdx.x, all_ones + 8 * threadIdx.x, true);
  sg::cuda::async_commit();
  if (hazard == 6) sg::cuda::fence_shared_for_wgmma();  // before the copy has landed
  sg::cuda::async_wait<0>();
  if (hazard != 5 && hazard != 6) sg::cuda::fence_shared_for_wgmma();
  __syncthreads();
  const __nv_bfloat162 pair = __floats2bfloat162_rn(1.0f, 1.0f);
  uint32_t a[4];
  for (uint32_t& r : a) memcpy(&r, &pair, sizeof r);
  float acc[32] = {};
  if (hazard == 4 && threadIdx.x == 5) ones[200] = __float2bfloat16(2.0f);  // no barrier before the wgmma
  sg::cuda::wgmma_fence();
  sg::cuda::wgmma_rs_n_major<__nv_bfloat16>(acc, a, sg::cuda::shared_operand(ones, 128, 256), false);
  sg::cuda::wgmma_commit();
  if (hazard == 1 && threadIdx.x == 5) ones[200] = __float2bfloat16(2.0f);
  if (hazard == 2) a[1] = 0;
  if (hazard == 3) acc[3] = 7.0f;
  sg::cuda::wgmma_wait<0>();
  out[threadIdx.x] = acc[0];
}

__global__ void wmma_kernel(float* c, const __nv_bfloat16* a, const __nv_bfloat16* b, bool synced) {
  namespace wmma = nvcuda::wmma;
  __shared__ alignas(32) __nv_bfloat16 a_tile[256];
  __shared__ alignas(32) __nv_bfloat16 b_tile[256];
  __shared__ alignas(32) float c_tile[256];
  for (int i = threadIdx.x; i < 256; i += 32) {
    a_tile[i] = a[i];
    b_tile[i] = b[i];
  }
  __syncwarp();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
  wmma::fill_fragment(fc, 0.0f);
  wmma::load_matrix_sync(fa, a_tile, 16);
  wmma::load_matrix_sync(fb, b_tile, 16);
  wmma::mma_sync(fc, fa, fb, fc);
  wmma::store_matrix_sync(c_tile, fc, 16, wmma::mem_row_major);
  if (synced) __syncwarp();
  for (int i = int(threadIdx.x) * 8; i < int(threadIdx.x) * 8 + 8; ++i) c[i] = c_tile[i];  // other lanes' shares
}

template <typename T, int Scale>
__global__ void scaled_ids_kernel(T* out, int n) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = T(i * Scale);
}

__global__ void write_kernel(float* out, int index) { out[index] = 1.0f; }

__global__ void scaled_copy_kernel(float* out, const float* in, float factor, int n) {
  if (int(threadIdx.x) < n) out[threadIdx.x] = factor * in[threadIdx.x];
}

}  // namespace

void block_sums(float* out, const float* in, int blocks, int threads) {
  block_sum_kernel<<<blocks, threads>>>(out, in);
}
void warp_sums(float* out, int lanes_alive) { warp_sum_kernel<<<1, 32>>>(out, lanes_alive); }
void thread_ids(int32_t* out, unsigned grid_x, unsigned grid_y, unsigned block_x, unsigned block_y) {
  thread_id_kernel<<<dim3(grid_x, grid_y), dim3(block_x, block_y)>>>(out);
}
void split_barrier(int32_t* out) { split_barrier_kernel<<<1, 32>>>(out); }
void reverse_in_shared(float* out, const float* in, int n) {
  reverse_kernel<<<1, 64, size_t(n) * sizeof(float)>>>(out, in, n);
}
cudaError_t allow_large_reverse(int bytes) {
  return cudaFuncSetAttribute(large_reverse_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}
void reverse_in_large_shared(float* out, const float* in, int n) {
  large_reverse_kernel<<<1, 64, size_t(n) * sizeof(float)>>>(out, in, n);
}
void write_at(float* out, int index) { write_kernel<<<1, 1>>>(out, index); }
void read_shared_at(float* out, int n, int index) {
  shared_overrun_kernel<<<1, 1, size_t(n) * sizeof(float)>>>(out, index);
}
void shift_without_barrier(float* out, int n) { racy_shift_kernel<<<1, n>>>(out); }
void too_much_shared_memory(float* out) { big_shared_kernel<<<1, 1>>>(out); }
void write_static_shared_at(float* out, int index) { static_overrun_kernel<<<1, 16>>>(out, index); }
void async_copy_before_and_after_wait(float* out, const float* in) { async_copy_kernel<<<1, 1>>>(out, in); }
void wgmma_twice(float* out, int threads, bool wait) { wgmma_wait_kernel<<<1, threads>>>(out, wait); }
void wgmma_with_hazard(float* out, const __nv_bfloat16* all_ones, int hazard) {
  wgmma_hazard_kernel<<<1, 128>>>(out, all_ones, hazard);
}
void wmma_product(float* c, const __nv_bfloat16* a, const __nv_bfloat16* b, bool synced) {
  wmma_kernel<<<1, 32>>>(c, a, b, synced);
}
const char* nested_template_launch(int32_t* out, int n) {
  // not a launch: kernel<<<1, 1>>>(out) in a comment
  static const char* text = "kernel<<<1, 1>>>(out) in a string";
  scaled_ids_kernel<int32_t, std::integral_constant<int, 3>::value><<<dim3(1), dim3(32), 0, nullptr>>>(out, n);
  return text;
}
void launch_too_many_threads(float* out) { write_kernel<<<1, 2048>>>(out, 0); }
void scaled_copy(float* out, const float* in, float factor, int n, cudaStream_t stream) {
  scaled_copy_kernel<<<1, 32, 0, stream>>>(out, in, factor, n);
}

}  // namespace sg::emu_test
