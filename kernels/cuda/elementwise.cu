// CUDA elementwise kernels: grid-stride loops, one element per thread step.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/float_types.cuh"

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

// din = dout * gelu'(x), written (not added); any of the three float types.
template <typename T>
__global__ void gelu_backward_kernel(T* din, const T* in, const T* dout, int64_t n) {
  SG_GRID_STRIDE(i, n) {
    float x = load(in[i]);
    float u = kGeluScale * (x + kGeluCubic * x * x * x);
    float t = tanhf(u);
    float du_dx = kGeluScale * (1.0f + 3.0f * kGeluCubic * x * x);
    din[i] = store<T>(load(dout[i]) * (0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du_dx));
  }
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

struct CopyGeometry {
  int ndim;
  int64_t shape[kMaxCopyDims];
  int64_t in_strides[kMaxCopyDims];
  int64_t out_strides[kMaxCopyDims];
};

// Word is an unsigned type of the element's size: the copy moves raw bits.
template <typename Word>
__global__ void strided_copy_kernel(Word* out, const Word* in, CopyGeometry g, int64_t n) {
  SG_GRID_STRIDE(i, n) {
    int64_t rest = i, in_offset = 0, out_offset = 0;
    for (int d = g.ndim - 1; d >= 0; --d) {
      int64_t coordinate = rest % g.shape[d];
      in_offset += coordinate * g.in_strides[d];
      out_offset += coordinate * g.out_strides[d];
      rest /= g.shape[d];
    }
    out[out_offset] = in[in_offset];
  }
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
    gelu_kernel<<<blocks_for(n), kThreads, 0, stream>>>(static_cast<T*>(out), static_cast<const T*>(in), n);
  });
  SG_CHECK_LAUNCH();
}

void gelu_backward(void* din, const void* in, const void* dout, int64_t n, DType dtype, cudaStream_t stream) {
  if (n == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    gelu_backward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(static_cast<T*>(din), static_cast<const T*>(in),
                                                                 static_cast<const T*>(dout), n);
  });
  SG_CHECK_LAUNCH();
}

void bias_gelu_forward(void* y, void* h, const void* bias, int64_t rows, int64_t cols, DType dtype,
                       cudaStream_t stream) {
  if (rows * cols == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    bias_gelu_kernel<<<blocks_for(rows * cols), kThreads, 0, stream>>>(
        static_cast<T*>(y), static_cast<T*>(h), static_cast<const T*>(bias), rows, cols);
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
  CopyGeometry geometry{};
  geometry.ndim = ndim;
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) {
    geometry.shape[d] = shape[d];
    geometry.in_strides[d] = in_strides[d];
    geometry.out_strides[d] = out_strides[d];
    n *= shape[d];
  }
  if (n == 0) return;
  unsigned blocks = blocks_for(n);
  switch (element_size) {
    case 2: strided_copy_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<uint16_t*>(out), static_cast<const uint16_t*>(in), geometry, n); break;
    case 4: strided_copy_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<uint32_t*>(out), static_cast<const uint32_t*>(in), geometry, n); break;
    case 8: strided_copy_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<uint64_t*>(out), static_cast<const uint64_t*>(in), geometry, n); break;
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
