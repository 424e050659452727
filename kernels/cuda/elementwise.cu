// CUDA elementwise kernels: grid-stride loops, one element per thread step.
#include "kernels/cuda/column_sums.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/float_types.cuh"
#include "kernels/copy_plan.h"

#include <algorithm>

namespace sg::cuda {
namespace {

constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluCubic = 0.044715f;

// GELU, tanh approximation (kernels/cpu/elementwise.h), of one value.
__device__ __forceinline__ float gelu_of(float x) {
  float u = kGeluScale * (x + kGeluCubic * x * x * x);
  return 0.5f * x * (1.0f + tanhf(u));
}

#define SG_GRID_STRIDE(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

template <typename T>
__global__ void add_kernel(T* out, const T* a, const T* b, int64_t n) {
  SG_GRID_STRIDE(i, n) out[i] = store<T>(load(a[i]) + load(b[i]));
}

template <typename T>
__global__ void mul_kernel(T* out, const T* a, const T* b, int64_t n) {
  SG_GRID_STRIDE(i, n) out[i] = store<T>(load(a[i]) * load(b[i]));
}

template <typename T>
__global__ void scale_kernel(T* out, const T* in, float scale, int64_t n) {
  SG_GRID_STRIDE(i, n) out[i] = store<T>(scale * load(in[i]));
}

// The factor read on the device (a mean loss's dloss / count): no host
// round trip for it. A denominator of 0 (a mean over no rows) gives 0.
template <typename T>
__global__ void scale_by_quotient_kernel(T* out, const T* in, const float* numerator, const float* denominator,
                                         int64_t n) {
  const float factor = denominator[0] == 0.0f ? 0.0f : numerator[0] / denominator[0];
  SG_GRID_STRIDE(i, n) out[i] = store<T>(factor * load(in[i]));
}

// x in f32, bf16 or f16: a 16-bit gradient accumulates into f32 without an
// f32 copy of it first.
template <typename T>
__global__ void axpy_kernel(float* y, float alpha, const T* x, int64_t n) {
  SG_GRID_STRIDE(i, n) y[i] += alpha * load(x[i]);
}

template <typename T>
__global__ void gelu_kernel(T* out, const T* in, int64_t n) {
  SG_GRID_STRIDE(i, n) out[i] = store<T>(gelu_of(load(in[i])));
}

// The same on 16-byte packs (both pointers 16-byte aligned), then the tail.
template <typename T>
__global__ void gelu_packed_kernel(T* out, const T* in, int64_t n) {
  using P = Vec<T, kVec16<T>>;  // 16 bytes of T as one access (float_types.cuh)
  const int64_t packs = n / kVec16<T>;
  SG_GRID_STRIDE(p, packs) {
    const P x = reinterpret_cast<const P*>(in)[p];
    P y;
    for (int j = 0; j < kVec16<T>; ++j) y.v[j] = store<T>(gelu_of(load(x.v[j])));
    reinterpret_cast<P*>(out)[p] = y;
  }
  SG_GRID_STRIDE(i, n - packs * kVec16<T>) {
    const int64_t e = packs * kVec16<T> + i;
    out[e] = store<T>(gelu_of(load(in[e])));
  }
}

// dout * gelu'(x) for one element.
__device__ __forceinline__ float gelu_grad_of(float x, float dy) {
  float u = kGeluScale * (x + kGeluCubic * x * x * x);
  float t = tanhf(u);
  float du_dx = kGeluScale * (1.0f + 3.0f * kGeluCubic * x * x);
  return dy * (0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du_dx);
}

// din = dout * gelu'(x), written (not added); any of the three float types.
template <typename T>
__global__ void gelu_backward_kernel(T* din, const T* in, const T* dout, int64_t n) {
  SG_GRID_STRIDE(i, n) din[i] = store<T>(gelu_grad_of(load(in[i]), load(dout[i])));
}

// The same on 16-byte packs (every pointer 16-byte aligned), then the tail.
template <typename T>
__global__ void gelu_backward_packed_kernel(T* din, const T* in, const T* dout, int64_t n) {
  using P = Vec<T, kVec16<T>>;  // 16 bytes of T as one access (float_types.cuh)
  const int64_t packs = n / kVec16<T>;
  SG_GRID_STRIDE(p, packs) {
    const P x = reinterpret_cast<const P*>(in)[p], dy = reinterpret_cast<const P*>(dout)[p];
    P dx;
    for (int j = 0; j < kVec16<T>; ++j) dx.v[j] = store<T>(gelu_grad_of(load(x.v[j]), load(dy.v[j])));
    reinterpret_cast<P*>(din)[p] = dx;
  }
  SG_GRID_STRIDE(i, n - packs * kVec16<T>) {
    const int64_t e = packs * kVec16<T> + i;
    din[e] = store<T>(gelu_grad_of(load(in[e]), load(dout[e])));
  }
}

// dh = dy * gelu'(h) written, and dbias's column sums of dh (as rounded to
// T, as a separate sum would read it) in the same pass: stage 1 of
// column_sums.cuh, V columns a thread, a row at a time (fc's 3072 columns
// give it blocks enough).
template <typename T, int V>
__global__ void gelu_bias_backward_kernel(float* partials, T* dh, const T* h, const T* dy, int64_t rows,
                                          int64_t cols) {
  float* const outs[1] = {partials};
  column_partial_sums<1, V, 1>(outs, rows, cols, [&](int64_t row, int64_t col, float (&v)[1][V]) {
    using P = Vec<T, V>;
    const int64_t at = row * cols + col;
    const P x = *reinterpret_cast<const P*>(h + at), d = *reinterpret_cast<const P*>(dy + at);
    P out;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      out.v[j] = store<T>(gelu_grad_of(load(x.v[j]), load(d.v[j])));
      v[0][j] = load(out.v[j]);
    }
    *reinterpret_cast<P*>(dh + at) = out;
  });
}

// c_fc's epilogue in one pass: h += bias[column] in place (kept for
// backward), y = gelu(h), as the CPU's bias_gelu_forward.
template <typename T>
__global__ void bias_gelu_kernel(T* y, T* h, const T* bias, int64_t rows, int64_t cols) {
  SG_GRID_STRIDE(i, rows * cols) {
    const T stored = store<T>(load(h[i]) + load(bias[i % cols]));
    h[i] = stored;
    y[i] = store<T>(gelu_of(load(stored)));  // of the rounded h, as backward will see it
  }
}

// The same on 16-byte packs: every pointer 16-byte aligned and cols a
// multiple of the pack, so a pack never straddles two rows.
template <typename T>
__global__ void bias_gelu_packed_kernel(T* y, T* h, const T* bias, int64_t rows, int64_t cols) {
  using P = Vec<T, kVec16<T>>;
  const int64_t packs_per_row = cols / kVec16<T>;
  SG_GRID_STRIDE(p, rows * packs_per_row) {
    const P in = reinterpret_cast<const P*>(h)[p], b = reinterpret_cast<const P*>(bias)[p % packs_per_row];
    P stored, out;
    for (int j = 0; j < kVec16<T>; ++j) {
      stored.v[j] = store<T>(load(in.v[j]) + load(b.v[j]));
      out.v[j] = store<T>(gelu_of(load(stored.v[j])));
    }
    reinterpret_cast<P*>(h)[p] = stored;
    reinterpret_cast<P*>(y)[p] = out;
  }
}

// ---- casts: every (in, out) pair, through f32 for the 16-bit floats ---------

template <typename Out, typename In>
__device__ __forceinline__ Out convert(In x) {
  if constexpr (std::is_same_v<In, __nv_bfloat16> || std::is_same_v<In, __half>) {
    return convert<Out>(load(x));
  } else if constexpr (std::is_same_v<Out, __nv_bfloat16> || std::is_same_v<Out, __half>) {
    return store<Out>(float(x));
  } else {
    return Out(x);  // float <-> integer truncates toward zero, as on the CPU
  }
}

template <typename Out, typename In>
__global__ void cast_kernel(Out* out, const In* in, int64_t n) {
  SG_GRID_STRIDE(i, n) out[i] = convert<Out>(in[i]);
}

template <typename Fn>
void with_any_type(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::f32: fn(float{}); return;
    case DType::bf16: fn(__nv_bfloat16{}); return;
    case DType::f16: fn(__half{}); return;
    case DType::i32: fn(int32_t{}); return;
    case DType::i64: fn(int64_t{}); return;
    case DType::f64: fn(double{}); return;
  }
}

// ---- strided copy and fill ------------------------------------------------------

// A strided copy after kernels/copy_plan.h's rewrites: extents and strides
// in words, at most CopyPlan::kMaxDims dimensions, outermost first.
template <typename Index>
struct CopyGeometry {
  int ndim;
  Index shape[CopyPlan::kMaxDims];
  Index in_strides[CopyPlan::kMaxDims];
  Index out_strides[CopyPlan::kMaxDims];
};

// Word is an unsigned type of the plan's word size (up to uint4's 16 bytes):
// the copy moves raw bits. Index is 32-bit where every offset fits, which
// makes the divisions that find each word's coordinates several times cheaper.
template <typename Word, typename Index>
__global__ void strided_copy_kernel(Word* out, const Word* in, CopyGeometry<Index> g, Index n) {
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += Index(gridDim.x) * blockDim.x) {
    Index rest = i, in_offset = 0, out_offset = 0;
    for (int d = g.ndim - 1; d > 0; --d) {
      const Index coordinate = rest % g.shape[d];
      in_offset += coordinate * g.in_strides[d];
      out_offset += coordinate * g.out_strides[d];
      rest /= g.shape[d];
    }
    out[out_offset + rest * g.out_strides[0]] = in[in_offset + rest * g.in_strides[0]];
  }
}

template <typename Word, typename Index>
void launch_strided_copy(void* out, const void* in, const CopyPlan& plan, cudaStream_t stream) {
  CopyGeometry<Index> g{};
  g.ndim = plan.ndim;
  for (int d = 0; d < plan.ndim; ++d) {
    g.shape[d] = Index(plan.shape[d]), g.in_strides[d] = Index(plan.in_strides[d]);
    g.out_strides[d] = Index(plan.out_strides[d]);
  }
  strided_copy_kernel<Word, Index><<<blocks_for(plan.words), kThreads, 0, stream>>>(
      static_cast<Word*>(out), static_cast<const Word*>(in), g, Index(plan.words));
}

// The largest offset a plan reaches, in words, on either side (+1).
int64_t copy_extent(const CopyPlan& plan) {
  int64_t in_last = 0, out_last = 0;
  for (int d = 0; d < plan.ndim; ++d) {
    in_last += (plan.shape[d] - 1) * plan.in_strides[d];
    out_last += (plan.shape[d] - 1) * plan.out_strides[d];
  }
  return std::max({in_last, out_last, plan.words}) + 1;
}

template <typename Word>
void launch_strided_copy(void* out, const void* in, const CopyPlan& plan, cudaStream_t stream) {
  // 32-bit indices while every offset, and a thread's index one grid stride on, stays below 2^31.
  const int64_t grid_stride = int64_t(blocks_for(plan.words)) * kThreads;
  if (copy_extent(plan) + grid_stride < (int64_t(1) << 31)) launch_strided_copy<Word, int32_t>(out, in, plan, stream);
  else launch_strided_copy<Word, int64_t>(out, in, plan, stream);
}

template <typename Word>
__global__ void fill_kernel(Word* out, Word value, int64_t n) {
  SG_GRID_STRIDE(i, n) out[i] = value;
}

}  // namespace

void add_forward(void* out, const void* a, const void* b, int64_t n, DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    add_kernel<<<blocks_for(n), kThreads, 0, stream>>>(static_cast<T*>(out), static_cast<const T*>(a),
                                                        static_cast<const T*>(b), n);
  });
  SG_CHECK_LAUNCH();
}

void mul_forward(void* out, const void* a, const void* b, int64_t n, DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    mul_kernel<<<blocks_for(n), kThreads, 0, stream>>>(static_cast<T*>(out), static_cast<const T*>(a),
                                                        static_cast<const T*>(b), n);
  });
  SG_CHECK_LAUNCH();
}

void scale_forward(void* out, const void* in, float scale, int64_t n, DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    scale_kernel<<<blocks_for(n), kThreads, 0, stream>>>(static_cast<T*>(out), static_cast<const T*>(in), scale, n);
  });
  SG_CHECK_LAUNCH();
}

void scale_by_quotient(void* out, const void* in, const float* numerator, const float* denominator, int64_t n,
                       DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    scale_by_quotient_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
        static_cast<T*>(out), static_cast<const T*>(in), numerator, denominator, n);
  });
  SG_CHECK_LAUNCH();
}

void axpy(float* y, float alpha, const void* x, DType x_dtype, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  with_float_type(x_dtype, [&](auto tag) {
    using T = decltype(tag);
    axpy_kernel<<<blocks_for(n), kThreads, 0, stream>>>(y, alpha, static_cast<const T*>(x), n);
  });
  SG_CHECK_LAUNCH();
}

void gelu_forward(void* out, const void* in, int64_t n, DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (all_aligned16({out, in})) {
      gelu_packed_kernel<<<blocks_for(n / kVec16<T>), kThreads, 0, stream>>>(static_cast<T*>(out),
                                                                              static_cast<const T*>(in), n);
    } else {
      gelu_kernel<<<blocks_for(n), kThreads, 0, stream>>>(static_cast<T*>(out), static_cast<const T*>(in), n);
    }
  });
  SG_CHECK_LAUNCH();
}

void gelu_backward(void* din, const void* in, const void* dout, int64_t n, DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (all_aligned16({din, in, dout})) {
      gelu_backward_packed_kernel<<<blocks_for(n / kVec16<T>), kThreads, 0, stream>>>(
          static_cast<T*>(din), static_cast<const T*>(in), static_cast<const T*>(dout), n);
    } else {
      gelu_backward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(static_cast<T*>(din), static_cast<const T*>(in),
                                                                   static_cast<const T*>(dout), n);
    }
  });
  SG_CHECK_LAUNCH();
}

void gelu_bias_backward(void* dh, const SumOutput& dbias, float* partials, const void* h, const void* dy,
                        int64_t rows, int64_t cols, DType dtype, cudaStream_t stream) {
  if (rows * cols == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    with_units<T>(cols, {dh, h, dy}, [&](auto units) {
      constexpr int V = decltype(units)::value;
      gelu_bias_backward_kernel<T, V><<<column_sum_grid(cols, V), column_sum_block(), 0, stream>>>(
          partials, static_cast<T*>(dh), static_cast<const T*>(h), static_cast<const T*>(dy), rows, cols);
    });
  });
  SG_CHECK_LAUNCH();
  finish_column_sums_into<1>({dbias}, {partials}, cols, stream);
}

void bias_gelu_forward(void* y, void* h, const void* bias, int64_t rows, int64_t cols, DType dtype,
                       cudaStream_t stream) {
  if (rows * cols == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (all_aligned16({y, h, bias}) && cols % kVec16<T> == 0) {
      bias_gelu_packed_kernel<<<blocks_for(rows * cols / kVec16<T>), kThreads, 0, stream>>>(
          static_cast<T*>(y), static_cast<T*>(h), static_cast<const T*>(bias), rows, cols);
    } else {
      bias_gelu_kernel<<<blocks_for(rows * cols), kThreads, 0, stream>>>(
          static_cast<T*>(y), static_cast<T*>(h), static_cast<const T*>(bias), rows, cols);
    }
  });
  SG_CHECK_LAUNCH();
}

void cast(void* out, DType out_dtype, const void* in, DType in_dtype, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  with_any_type(out_dtype, [&](auto out_tag) {
    with_any_type(in_dtype, [&](auto in_tag) {
      using Out = decltype(out_tag);
      using In = decltype(in_tag);
      cast_kernel<<<blocks_for(n), kThreads, 0, stream>>>(static_cast<Out*>(out), static_cast<const In*>(in), n);
    });
  });
  SG_CHECK_LAUNCH();
}

void strided_copy(void* out, const int64_t* out_strides, const void* in, const int64_t* in_strides,
                  const int64_t* shape, int ndim, int64_t element_size, cudaStream_t stream) {
  SG_CHECK(ndim <= kMaxCopyDims, "strided copies on CUDA support up to ", kMaxCopyDims, " dimensions, got ", ndim);
  const CopyPlan plan = plan_copy(shape, in_strides, out_strides, ndim, element_size, reinterpret_cast<uintptr_t>(in),
                                  reinterpret_cast<uintptr_t>(out));
  if (plan.words == 0) return;
  if (plan.contiguous) {  // the copy engine's own path, at full bandwidth
    CUDA_CHECK(cudaMemcpyAsync(out, in, size_t(plan.bytes()), cudaMemcpyDeviceToDevice, stream));
    return;
  }
  switch (plan.word_bytes) {
    case 2: launch_strided_copy<uint16_t>(out, in, plan, stream); break;
    case 4: launch_strided_copy<uint32_t>(out, in, plan, stream); break;
    case 8: launch_strided_copy<uint2>(out, in, plan, stream); break;
    case 16: launch_strided_copy<uint4>(out, in, plan, stream); break;
    default: SG_FAIL("strided_copy: unsupported element size ", element_size);
  }
  SG_CHECK_LAUNCH();
}

void fill(void* out, DType dtype, double value, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  unsigned blocks = blocks_for(n);
  switch (dtype) {
    case DType::f32: fill_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<float*>(out), float(value), n); break;
    case DType::bf16: fill_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<uint16_t*>(out), to_bf16(float(value)).bits, n); break;
    case DType::f16: fill_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<uint16_t*>(out), to_f16(float(value)).bits, n); break;
    case DType::i32: fill_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<int32_t*>(out), int32_t(value), n); break;
    case DType::i64: fill_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<int64_t*>(out), int64_t(value), n); break;
    case DType::f64: fill_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<double*>(out), value, n); break;
  }
  SG_CHECK_LAUNCH();
}

}  // namespace sg::cuda
