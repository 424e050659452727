// LayerNorm's backward on CUDA (kernels/cuda/normalization.h): dx, and
// the parameters' gradients dweight = sum over rows of dy * xhat and dbias =
// sum of dy, in f32 whatever the input's dtype. Three ways, all computing
// the formulas of kernels/cpu/normalization.h:
//   - two kernels: dx a warp a row, then the column sums (column_sums.cuh);
//   - fused (the default where a row fits a warp's registers): one pass,
//     the sums kept in registers across a warp's rows;
//   - pipelined (SG_LAYERNORM_PIPELINED_BACKWARD=1, 16-bit types): the fused
//     kernel with each warp's next row on its way into shared memory while
//     it computes on this one. The same bits as the fused kernel.
#include <atomic>

#include "kernels/cuda/async_copy.cuh"
#include "kernels/cuda/column_sums.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/float_types.cuh"
#include "kernels/cuda/normalization.h"
#include "kernels/cuda/warp.cuh"
#include "kernels/env_switch.h"

namespace sg::cuda {
namespace {

// One element of LayerNorm's dx, given its row's means of dxhat and of
// dxhat * xhat (dxhat = dy * weight): the formula of
// kernels/cpu/normalization.h, shared by the backward kernels below.
__device__ __forceinline__ float dx_of(float xhat, float dxhat, float rstd, float mean_dxhat,
                                       float mean_dxhat_xhat) {
  return rstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat);
}

template <int N, typename T>
__global__ void layernorm_backward_input_kernel(T* din, const T* dout, const T* in, const T* weight,
                                                const float* mean, const float* rstd, const T* add_to_din,
                                                int64_t N_rows, int64_t C) {
  using V = Vec<T, N>;
  int64_t row = warp_row();
  int lane = threadIdx.x % kWarp;
  if (row >= N_rows) return;
  const V *x = reinterpret_cast<const V*>(in + row * C), *dy = reinterpret_cast<const V*>(dout + row * C);
  const V* w = reinterpret_cast<const V*>(weight);
  const int64_t units = C / N;
  float m = mean[row], s = rstd[row];
  float sum_dxhat = 0.0f, sum_dxhat_xhat = 0.0f;
  for (int64_t u = lane; u < units; u += kWarp) {
    const V a = x[u], d = dy[u], wu = w[u];
    for (int j = 0; j < N; ++j) {
      float xhat = (load(a.v[j]) - m) * s, dxhat = load(d.v[j]) * load(wu.v[j]);
      sum_dxhat += dxhat;
      sum_dxhat_xhat += dxhat * xhat;
    }
  }
  float mean_dxhat = warp_sum(sum_dxhat) / float(C);
  float mean_dxhat_xhat = warp_sum(sum_dxhat_xhat) / float(C);
  V* dx = reinterpret_cast<V*>(din + row * C);
  const V* extra = add_to_din ? reinterpret_cast<const V*>(add_to_din + row * C) : nullptr;
  for (int64_t u = lane; u < units; u += kWarp) {
    const V a = x[u], d = dy[u], wu = w[u];
    V e;
    if (extra) e = extra[u];
    V out;
    for (int j = 0; j < N; ++j) {
      const float xhat = (load(a.v[j]) - m) * s;
      float value = dx_of(xhat, load(d.v[j]) * load(wu.v[j]), s, mean_dxhat, mean_dxhat_xhat);
      if (extra) value += load(e.v[j]);  // the input's gradient from elsewhere, in the same pass
      out.v[j] = store<T>(value);
    }
    dx[u] = out;  // written, not added: din may be add_to_din itself
  }
}

// dweight = column sums of dy * xhat, dbias = column sums of dy, in two
// deterministic stages (column_sums.cuh), V columns a thread.
template <typename T, int V>
__global__ void layernorm_backward_params_kernel(float* weight_partials, float* bias_partials, const T* dout,
                                                 const T* in, const float* mean, const float* rstd, int64_t N,
                                                 int64_t C) {
  float* const outs[2] = {weight_partials, bias_partials};
  column_partial_sums<2, V>(outs, N, C, [&](int64_t row, int64_t c, float (&v)[2][V]) {
    const Vec<T, V> dy = *reinterpret_cast<const Vec<T, V>*>(dout + row * C + c);
    const Vec<T, V> x = *reinterpret_cast<const Vec<T, V>*>(in + row * C + c);
    const float m = mean[row], s = rstd[row];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      v[0][j] = load(dy.v[j]) * (load(x.v[j]) - m) * s;
      v[1][j] = load(dy.v[j]);
    }
  });
}

// LayerNorm's backward in one pass over the rows: dx a warp a row (as
// layernorm_backward_input_kernel), with dweight and dbias summed on the
// way, so dy and x are read once (the two-kernel path reads them again for
// the sums: 25 times a GPT-2 step). Block b owns chunk b of the rows
// (kColumnSumChunks chunks, as column_sums.cuh) and its warp w rows w,
// w + kFusedWarps, ... of it. A lane's columns are fixed (units lane, lane
// + 32, ...), so their sums stay in its registers across rows, as do the
// row's x and dy between its two passes (statistics, then dx): U units of N
// values a lane, which bounds C (kMaxFusedUnits: 768 for GPT-2 small in
// 16 bits or f32; wider rows take the two kernels). The warps then add their
// sums in a fixed tree through shared memory and warp 0 writes the block's
// partial row; finish_column_sums adds the chunks in order. The same bits
// every run.
constexpr int kFusedWarps = 16;

// At 512 threads a thread has 128 registers: ptxas (sm_90) gives these 127
// (16 bits) and 128 (f32) with no spills; 4 units of 8 spilled 396 bytes.
template <int N>
constexpr int kMaxFusedUnits = N >= 8 ? 3 : N == 4 ? 6 : 0;

// One row of the fused kernels, by one warp: dx (plus the gradient to add,
// `extra`, when not null) written, and this lane's columns of dy xhat and
// dy added to sums[0] and sums[1]. x_at(i) and dy_at(i) give the row's unit
// lane + 32 i of x and dy: from registers in one kernel, from shared memory
// in the other; extra points into global or shared memory.
template <int N, int U, typename T, typename XAt, typename DyAt>
__device__ __forceinline__ void fused_row(Vec<T, N>* dx, XAt&& x_at, DyAt&& dy_at, const Vec<T, N>* extra,
                                          const Vec<T, N>* w, float m, float s, int64_t units, int64_t C,
                                          float (&sums)[2][U][N]) {
  using V = Vec<T, N>;
  const int lane = threadIdx.x % kWarp;
  float sum_dxhat = 0.0f, sum_dxhat_xhat = 0.0f;
#pragma unroll
  for (int i = 0; i < U; ++i) {
    const int64_t u = lane + i * kWarp;
    if (u >= units) continue;
    const V wu = w[u], x = x_at(i), dy = dy_at(i);
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const float xhat = (load(x.v[j]) - m) * s, dxhat = load(dy.v[j]) * load(wu.v[j]);
      sum_dxhat += dxhat;
      sum_dxhat_xhat += dxhat * xhat;
    }
  }
  const float mean_dxhat = warp_sum(sum_dxhat) / float(C);
  const float mean_dxhat_xhat = warp_sum(sum_dxhat_xhat) / float(C);
#pragma unroll
  for (int i = 0; i < U; ++i) {
    const int64_t u = lane + i * kWarp;
    if (u >= units) continue;
    const V wu = w[u], x = x_at(i), dy = dy_at(i);
    V e, out;
    if (extra) e = extra[u];
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const float xhat = (load(x.v[j]) - m) * s, d = load(dy.v[j]);
      float value = dx_of(xhat, d * load(wu.v[j]), s, mean_dxhat, mean_dxhat_xhat);
      if (extra) value += load(e.v[j]);
      out.v[j] = store<T>(value);
      sums[0][i][j] += d * xhat;
      sums[1][i][j] += d;
    }
    dx[u] = out;  // written, not added: din may be add_to_din itself
  }
}

// The end of both fused kernels: the block's warps add their sums in a
// fixed tree, each round the upper half of the warps still in it handing
// its sums to the lower half through shared memory (upper_half: room for
// kFusedWarps / 2 rows of C floats), one of the two sums at a time; then
// warp 0 writes the block's partial rows.
template <int N, int U>
__device__ __forceinline__ void write_block_sums(float (&sums)[2][U][N], float* upper_half, float* weight_partials,
                                                 float* bias_partials, int64_t units, int64_t C) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
#pragma unroll
  for (int half = kFusedWarps / 2; half >= 1; half /= 2) {
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      __syncthreads();  // the last hand-over is read
      if (warp >= half && warp < 2 * half) {
#pragma unroll
        for (int i = 0; i < U; ++i) {
          const int64_t u = lane + i * kWarp;
#pragma unroll
          for (int j = 0; j < N; ++j) {
            if (u < units) upper_half[(warp - half) * C + u * N + j] = sums[k][i][j];
          }
        }
      }
      __syncthreads();
      if (warp < half) {
#pragma unroll
        for (int i = 0; i < U; ++i) {
          const int64_t u = lane + i * kWarp;
#pragma unroll
          for (int j = 0; j < N; ++j) {
            if (u < units) sums[k][i][j] += upper_half[warp * C + u * N + j];
          }
        }
      }
    }
  }
  if (warp != 0) return;
  float* const partials[2] = {weight_partials + int64_t(blockIdx.x) * C, bias_partials + int64_t(blockIdx.x) * C};
#pragma unroll
  for (int k = 0; k < 2; ++k) {
#pragma unroll
    for (int i = 0; i < U; ++i) {
      const int64_t u = lane + i * kWarp;
#pragma unroll
      for (int j = 0; j < N; ++j) {
        if (u < units) partials[k][u * N + j] = sums[k][i][j];
      }
    }
  }
}

// The rows of the block's chunk (kColumnSumChunks chunks of the N_rows).
struct ChunkRows {
  int64_t first, last;
};
__device__ __forceinline__ ChunkRows chunk_rows(int64_t N_rows) {
  const int64_t rows = (N_rows + kColumnSumChunks - 1) / kColumnSumChunks;
  const int64_t first = int64_t(blockIdx.x) * rows;
  return {first, min(N_rows, first + rows)};
}

template <int N, int U, typename T>
__global__ void __launch_bounds__(kFusedWarps * kWarp)
    layernorm_backward_fused_kernel(T* din, float* weight_partials, float* bias_partials, const T* dout, const T* in,
                                    const T* weight, const float* mean, const float* rstd, const T* add_to_din,
                                    int64_t N_rows, int64_t C) {
  using V = Vec<T, N>;
  extern __shared__ float upper_half[];  // (kFusedWarps / 2) * C floats: the tree's upper warps' sums
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t units = C / N;
  const ChunkRows chunk = chunk_rows(N_rows);
  const V* w = reinterpret_cast<const V*>(weight);
  float sums[2][U][N] = {};  // this lane's columns of dweight, dbias
  for (int64_t row = chunk.first + warp; row < chunk.last; row += kFusedWarps) {
    const V *xr = reinterpret_cast<const V*>(in + row * C), *dyr = reinterpret_cast<const V*>(dout + row * C);
    V x[U] = {}, dy[U] = {};  // units past the row stay unread
#pragma unroll
    for (int i = 0; i < U; ++i) {
      const int64_t u = lane + i * kWarp;
      if (u < units) x[i] = xr[u], dy[i] = dyr[u];
    }
    const V* extra = add_to_din ? reinterpret_cast<const V*>(add_to_din + row * C) : nullptr;
    fused_row<N, U>(reinterpret_cast<V*>(din + row * C), [&](int i) -> const V& { return x[i]; },
                    [&](int i) -> const V& { return dy[i]; }, extra, w, mean[row], rstd[row], units, C, sums);
  }
  write_block_sums<N, U>(sums, upper_half, weight_partials, bias_partials, units, C);
}

// The pipelined kernel (SG_LAYERNORM_PIPELINED_BACKWARD=1): the fused
// kernel's rows, sums and tree, with the loads moved a row ahead. The fused
// kernel asks for a row's x and dy, waits for them, computes, then asks for
// the gradient to add and waits again: every warp of the block does the same
// at about the same time, so memory is busy in bursts and idle between them
// (0.77 ms a GPT-2 step at micro-batch 8 for bytes that take 0.42 at full
// bandwidth, docs/performance.md). Here each lane copies its units of the
// warp's next row (x, dy and the gradient to add: 16-byte cp.async into
// shared memory, no registers held) before it computes on this one, so a
// row's loads are in flight for a whole row's work. A lane reads only the
// units it copied itself, so its own wait makes them visible: no barrier.
// Two buffers a warp (this row's, the next row's) of 3 rows of C values:
// 16 x 2 x 3 x 768 x 2 bytes = 144 KiB for GPT-2 small in 16 bits (an A100
// allows a block 163, an H100 227; the f32 path would need twice that, so
// it keeps the fused kernel). The tree's scratch reuses the buffers once
// every copy has landed.
constexpr int kStages = 2;

template <typename T>
constexpr size_t pipelined_shared_bytes(int64_t C) {
  return size_t(kFusedWarps) * kStages * 3 * size_t(C) * sizeof(T);  // >= the tree's (kFusedWarps / 2) C floats
}

template <int U, typename T>
__global__ void __launch_bounds__(kFusedWarps * kWarp)
    layernorm_backward_pipelined_kernel(T* din, float* weight_partials, float* bias_partials, const T* dout,
                                        const T* in, const T* weight, const float* mean, const float* rstd,
                                        const T* add_to_din, int64_t N_rows, int64_t C) {
  constexpr int N = kVec16<T>;  // 16-byte units: one cp.async each
  using V = Vec<T, N>;
  extern __shared__ __align__(16) unsigned char pipeline_bytes[];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t units = C / N;
  const ChunkRows chunk = chunk_rows(N_rows);
  const V* w = reinterpret_cast<const V*>(weight);
  // This warp's buffers: [stage][x, dy, extra][units].
  V* const buffers = reinterpret_cast<V*>(pipeline_bytes) + int64_t(warp) * kStages * 3 * units;
  // Starts this lane's units of row `row` into buffer `stage`, as one group.
  auto fetch = [&](int64_t row, int stage) {
    const T* sources[3] = {in + row * C, dout + row * C, add_to_din ? add_to_din + row * C : nullptr};
    V* to = buffers + stage * 3 * units;
#pragma unroll
    for (int i = 0; i < U; ++i) {
      const int64_t u = lane + i * kWarp;
      if (u >= units) continue;
#pragma unroll
      for (int a = 0; a < 3; ++a) {
        if (sources[a]) async_copy<16>(to + a * units + u, reinterpret_cast<const V*>(sources[a]) + u, true);
      }
    }
    async_commit();
  };
  float sums[2][U][N] = {};  // this lane's columns of dweight, dbias
  int64_t row = chunk.first + warp;
  float m_next = 0.0f, s_next = 0.0f;  // the statistics of the row in flight, in registers
  if (row < chunk.last) {
    fetch(row, 0);
    m_next = mean[row], s_next = rstd[row];
  }
  for (int stage = 0; row < chunk.last; row += kFusedWarps, stage ^= 1) {
    const float m = m_next, s = s_next;
    const int64_t next = row + kFusedWarps;
    // The next row goes into the buffer the row before this one used: this
    // lane's reads of it are done (their values went into that row's dx,
    // stored before this point, and a thread issues in order).
    if (next < chunk.last) {
      fetch(next, stage ^ 1);
      m_next = mean[next], s_next = rstd[next];
      async_wait<1>();  // this row's group has landed; the next one's may still be on its way
    } else {
      async_wait<0>();
    }
    const V* x = buffers + stage * 3 * units;
    const V* dy = x + units;
    fused_row<N, U>(reinterpret_cast<V*>(din + row * C), [&](int i) { return x[lane + i * kWarp]; },
                    [&](int i) { return dy[lane + i * kWarp]; }, add_to_din ? dy + units : nullptr, w, m, s, units,
                    C, sums);
  }
  // Every copy this lane started has landed (its last wait was for all of
  // them); the tree's first barrier waits for the other lanes' reads.
  write_block_sums<N, U>(sums, reinterpret_cast<float*>(pipeline_bytes), weight_partials, bias_partials, units, C);
}

// Launches the fused kernel with U = units (a lane's units), for U up to
// kMaxFusedUnits<N>.
template <int N, typename T, int U = 1>
void launch_fused_backward(int units, T* din, float* partials, const T* dout, const T* in, const T* weight,
                           const float* mean, const float* rstd, const T* add_to_din, int64_t N_rows, int64_t C,
                           cudaStream_t stream) {
  if constexpr (U <= kMaxFusedUnits<N>) {
    if (units != U) {
      launch_fused_backward<N, T, U + 1>(units, din, partials, dout, in, weight, mean, rstd, add_to_din, N_rows, C,
                                         stream);
      return;
    }
    const size_t shared = size_t(kFusedWarps / 2) * size_t(C) * sizeof(float);
    layernorm_backward_fused_kernel<N, U, T><<<unsigned(kColumnSumChunks), kFusedWarps * kWarp, shared, stream>>>(
        din, partials, partials + kColumnSumChunks * C, dout, in, weight, mean, rstd, add_to_din, N_rows, C);
  } else {
    SG_FAIL("layernorm_backward: no fused kernel for ", units, " units a lane (the caller checks)");
  }
}

std::atomic<int64_t> g_pipelined_backwards{0};  // layernorm_pipelined_backwards

// The same for the pipelined kernel (16-byte units of a 16-bit T). False,
// with nothing launched, where the device will not give a block that much
// shared memory: the caller then takes the fused kernel.
template <typename T, int U = 1>
bool launch_pipelined_backward(int units, T* din, float* partials, const T* dout, const T* in, const T* weight,
                               const float* mean, const float* rstd, const T* add_to_din, int64_t N_rows, int64_t C,
                               cudaStream_t stream) {
  if constexpr (U <= kMaxFusedUnits<kVec16<T>>) {
    if (units != U) {
      return launch_pipelined_backward<T, U + 1>(units, din, partials, dout, in, weight, mean, rstd, add_to_din,
                                                 N_rows, C, stream);
    }
    const size_t shared = pipelined_shared_bytes<T>(C);
    if (cudaFuncSetAttribute(layernorm_backward_pipelined_kernel<U, T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             int(shared)) != cudaSuccess) {
      (void)cudaGetLastError();  // not an error of ours: the fused kernel does the same work
      return false;
    }
    layernorm_backward_pipelined_kernel<U, T><<<unsigned(kColumnSumChunks), kFusedWarps * kWarp, shared, stream>>>(
        din, partials, partials + kColumnSumChunks * C, dout, in, weight, mean, rstd, add_to_din, N_rows, C);
    g_pipelined_backwards.fetch_add(1, std::memory_order_relaxed);
    return true;
  } else {
    SG_FAIL("layernorm_backward: no pipelined kernel for ", units, " units a lane (the caller checks)");
  }
}

// The fused backward where C allows it; SG_LAYERNORM_FUSED_BACKWARD=0 takes
// the two kernels (input, then parameters) to compare. Read per call.
bool fused_backward_on() { return env_switch_on("SG_LAYERNORM_FUSED_BACKWARD"); }
// The pipelined one instead of the fused one, for 16-bit types: off until a GPU has timed it.
bool pipelined_backward_on() { return env_switch_opted_in("SG_LAYERNORM_PIPELINED_BACKWARD"); }

}  // namespace

int64_t layernorm_pipelined_backwards() { return g_pipelined_backwards.load(std::memory_order_relaxed); }

void layernorm_backward(void* din, const SumOutput& dweight, const SumOutput& dbias, float* partials, const void* dout,
                        const void* in, const void* weight, const float* mean, const float* rstd, int64_t N, int64_t C,
                        DType dtype, cudaStream_t stream, const void* add_to_din) {
  if (N == 0 || C == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    bool fused = false;
    with_units<T>(C, {din, dout, in, weight, add_to_din}, [&](auto units) {
      constexpr int kN = decltype(units)::value;
      const int64_t lane_units = (C / kN + kWarp - 1) / kWarp;
      fused = lane_units <= kMaxFusedUnits<kN> && fused_backward_on();
      if (fused) {
        auto* dx = static_cast<T*>(din);
        const auto *dy = static_cast<const T*>(dout), *x = static_cast<const T*>(in);
        const auto *w = static_cast<const T*>(weight), *extra = static_cast<const T*>(add_to_din);
        if constexpr (sizeof(T) == 2 && kN == kVec16<T>) {
          if (pipelined_backward_on() &&
              launch_pipelined_backward<T>(int(lane_units), dx, partials, dy, x, w, mean, rstd, extra, N, C, stream)) {
            return;
          }
        }
        launch_fused_backward<kN, T>(int(lane_units), dx, partials, dy, x, w, mean, rstd, extra, N, C, stream);
        return;
      }
      layernorm_backward_input_kernel<kN, T><<<blocks_for_rows(N, kThreads), kThreads, 0, stream>>>(
          static_cast<T*>(din), static_cast<const T*>(dout), static_cast<const T*>(in),
          static_cast<const T*>(weight), mean, rstd, static_cast<const T*>(add_to_din), N, C);
    });
    SG_CHECK_LAUNCH();
    if (fused) return;
    with_units<T>(C, {dout, in}, [&](auto units) {
      constexpr int V = decltype(units)::value;
      layernorm_backward_params_kernel<T, V><<<column_sum_grid(C, V), column_sum_block(), 0, stream>>>(
          partials, partials + kColumnSumChunks * C, static_cast<const T*>(dout), static_cast<const T*>(in), mean,
          rstd, N, C);
    });
    SG_CHECK_LAUNCH();
  });
  finish_column_sums_into<2>({dweight, dbias}, {partials, partials + kColumnSumChunks * C}, C, stream);
}

}  // namespace sg::cuda
