// cuBLAS GEMM for row-major buffers. cuBLAS is column-major; a row-major
// (r, c) matrix with row stride ld is, to cuBLAS, the column-major (c, r)
// matrix of its transpose. So the row-major product C = op(A) op(B) is issued
// as the column-major product C^T = op(B)^T op(A)^T: swap the operands, swap
// m and n, and keep each operand's own transpose flag.
#include <array>
#include <atomic>
#include <cstdio>
#include <mutex>

#include "kernels/cuda/column_sums.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/float_types.cuh"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/matmul_lt.h"
#include "kernels/env_switch.h"

namespace sg::cuda {
namespace {

cublasHandle_t handle_for_current_device() {
  static std::array<cublasHandle_t, 16> handles{};
  static std::mutex mutex;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mutex);
  if (handles[size_t(device)] == nullptr) CUBLAS_CHECK(cublasCreate(&handles[size_t(device)]));
  return handles[size_t(device)];
}

cudaDataType cuda_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return CUDA_R_32F;
    case DType::bf16: return CUDA_R_16BF;
    case DType::f16: return CUDA_R_16F;
    default: SG_FAIL("cuBLAS GEMM: unsupported dtype ", dtype_name(dtype));
  }
}

template <typename T>
__global__ void bias_add_kernel(T* out, const T* bias, int64_t rows, int64_t cols) {
  int64_t n = rows * cols;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = store<T>(load(out[i]) + load(bias[i % cols]));
  }
}

// dbias = the column sums of dout, in two stages (column_sums.cuh), V
// columns a thread.
template <typename T, int V>
__global__ void bias_backward_kernel(float* partials, const T* dout, int64_t rows, int64_t cols) {
  float* const outs[1] = {partials};
  column_partial_sums<1, V>(outs, rows, cols, [&](int64_t row, int64_t col, float (&v)[1][V]) {
    const Vec<T, V> d = *reinterpret_cast<const Vec<T, V>*>(dout + row * cols + col);
#pragma unroll
    for (int j = 0; j < V; ++j) v[0][j] = load(d.v[j]);
  });
}

// pointers[0, count): C's matrices, [count, 2 count): A's, [2 count, 3 count): B's.
__global__ void grid_pointers_kernel(void** pointers, MatrixGrid c, MatrixGrid a, MatrixGrid b, int64_t inner,
                                     int64_t count, int64_t element_bytes) {
  const int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= count) return;
  const int64_t o = index / inner, i = index % inner;
  auto at = [&](const MatrixGrid& g) {
    const char* base = static_cast<const char*>(g.base);
    return const_cast<char*>(base + (o * g.outer_stride + i * g.inner_stride) * element_bytes);
  };
  pointers[index] = at(c);
  pointers[count + index] = at(a);
  pointers[2 * count + index] = at(b);
}

}  // namespace

bool matmul_grid(const MatrixGrid& c, const MatrixGrid& a, const MatrixGrid& b, int64_t outer, int64_t inner,
                 const GemmShape& s, DType dtype, void** pointers, cudaStream_t stream) {
  static std::atomic<bool> usable = env_switch_on("SG_GEMM_POINTER_ARRAYS");
  if (!usable.load()) return false;
  const int64_t count = outer * inner;
  if (s.m == 0 || s.n == 0 || count == 0) return true;
  grid_pointers_kernel<<<blocks_for(count), kThreads, 0, stream>>>(pointers, c, a, b, inner, count,
                                                                    int64_t(dtype_size(dtype)));
  SG_CHECK_LAUNCH();
  cublasHandle_t handle = handle_for_current_device();
  CUBLAS_CHECK(cublasSetStream(handle, stream));
  const cudaDataType type = cuda_type(dtype);
  // The row-major trick, as in matmul_forward: B's pointers go first.
  const cublasStatus_t status = cublasGemmBatchedEx_64(
      handle, s.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, s.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, s.n, s.m, s.k, &s.alpha,
      pointers + 2 * count, type, s.ldb, pointers + count, type, s.lda, &s.beta, pointers, type, s.ldc, count,
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (status == CUBLAS_STATUS_SUCCESS) return true;
  // Refused at launch (nothing ran): strided batches from now on.
  if (usable.exchange(false)) {
    std::fprintf(stderr, "shardgrad: cublasGemmBatchedEx refused a %lldx%lldx%lld %s GEMM (%s); using strided "
                 "batches for attention\n", (long long)s.m, (long long)s.n, (long long)s.k, dtype_name(dtype).data(),
                 cublasGetStatusString(status));
  }
  return false;
}

void matmul_forward(void* c, const void* a, const void* b, const GemmShape& s, DType dtype, cudaStream_t stream) {
  matmul_forward(c, dtype, a, b, s, dtype, stream);
}

// Both libraries take 16-bit operands with an f32 C under f32 compute
// (cuBLAS's cublasGemmEx table lists the pair): the products are summed in
// f32 either way, so an f32 C only skips the rounding to 16 bits.
void matmul_forward(void* c, DType c_dtype, const void* a, const void* b, const GemmShape& s, DType dtype,
                    cudaStream_t stream) {
  SG_CHECK(c_dtype == dtype || c_dtype == DType::f32, "matmul: a ", dtype_name(dtype), " product into a ",
           dtype_name(c_dtype), " output; the output must be ", dtype_name(dtype), " or f32");
  if (s.m == 0 || s.n == 0 || s.batch == 0) return;
  if (s.k > 0 && lt_matmul(c, c_dtype, a, b, LtEpilogue{}, s, dtype, stream)) return;
  cublasHandle_t handle = handle_for_current_device();
  CUBLAS_CHECK(cublasSetStream(handle, stream));
  const cudaDataType type = cuda_type(dtype), c_type = cuda_type(c_dtype);
  CUBLAS_CHECK(cublasGemmStridedBatchedEx_64(
      handle, s.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, s.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, s.n, s.m, s.k, &s.alpha,
      b, type, s.ldb, s.stride_b, a, type, s.lda, s.stride_a, &s.beta, c, c_type, s.ldc, s.stride_c, s.batch,
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void matmul_backward(void* da, void* db, const void* dc, const void* a, const void* b, const GemmShape& shape,
                     DType dtype, cudaStream_t stream) {
  // The same two GEMMs as the CPU version (kernels/gemm_shape.h explains them).
  if (da) {
    GemmShape g = shape.grad_a_shape();
    if (!shape.trans_a) matmul_forward(da, dc, b, g, dtype, stream);
    else matmul_forward(da, b, dc, g, dtype, stream);
  }
  if (db) {
    GemmShape g = shape.grad_b_shape();
    if (!shape.trans_b) matmul_forward(db, a, dc, g, dtype, stream);
    else matmul_forward(db, dc, a, g, dtype, stream);
  }
}

void matmul_bias_forward(void* c, const void* a, const void* b, const void* bias, const GemmShape& s, DType dtype,
                         cudaStream_t stream) {
  if (s.m == 0 || s.n == 0 || s.batch == 0) return;
  if (s.k > 0 && s.beta == 0.0f && s.batch == 1 && lt_matmul(c, dtype, a, b, LtEpilogue{bias}, s, dtype, stream)) {
    return;
  }
  matmul_forward(c, a, b, s, dtype, stream);  // cuBLAS, then the bias in a second pass
  bias_add_forward(c, bias, s.m * s.batch, s.n, dtype, stream);
}

namespace {

// Read at each call (a test turns it on and off; a step makes a few dozen calls).
bool gelu_epilogue_on() { return env_switch_opted_in("SG_GEMM_GELU_EPILOGUE"); }

// The epilogues' shared terms: one dense (m, n) output, nothing added to
// it, and n a multiple of 8 (the auxiliary matrix's leading dimension must
// be, says cublasLt.h; some GPUs take others, but the same problem then
// takes the same path everywhere).
bool gelu_epilogue_applies(const GemmShape& s) {
  return gelu_epilogue_on() && s.m > 0 && s.n > 0 && s.n % 8 == 0 && s.k > 0 && s.batch == 1 && s.beta == 0.0f &&
         s.ldc == s.n;
}

}  // namespace

bool matmul_bias_gelu_forward(void* y, void* h, const void* a, const void* b, const void* bias, const GemmShape& s,
                              DType dtype, cudaStream_t stream) {
  if (!gelu_epilogue_applies(s)) return false;
  LtEpilogue epilogue{bias, LtEpilogue::Gelu::forward, h};
  return lt_matmul(y, dtype, a, b, epilogue, s, dtype, stream);
}

bool matmul_gelu_backward(void* dh, const void* a, const void* b, const void* h, const GemmShape& s, DType dtype,
                          cudaStream_t stream) {
  if (!gelu_epilogue_applies(s)) return false;
  LtEpilogue epilogue{nullptr, LtEpilogue::Gelu::backward, const_cast<void*>(h)};  // read, not written
  return lt_matmul(dh, dtype, a, b, epilogue, s, dtype, stream);
}

bool matmul_forward_with_row_sums(void* c, DType c_dtype, void* row_sums, const void* a, const void* b,
                                  const GemmShape& s, DType dtype, cudaStream_t stream) {
  if (!env_switch_opted_in("SG_GEMM_BIAS_GRAD_EPILOGUE")) return false;  // read at each call, as the GELU switch
  if (s.m == 0 || s.n == 0 || s.k == 0 || s.batch != 1 || !s.trans_a) return false;
  LtEpilogue epilogue;
  epilogue.a_row_sums = row_sums;
  return lt_matmul(c, c_dtype, a, b, epilogue, s, dtype, stream);
}

void bias_add_forward(void* out, const void* bias, int64_t rows, int64_t cols, DType dtype, cudaStream_t stream) {
  if (rows * cols == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    bias_add_kernel<<<blocks_for(rows * cols), kThreads, 0, stream>>>(static_cast<T*>(out), static_cast<const T*>(bias),
                                                                       rows, cols);
  });
  SG_CHECK_LAUNCH();
}

void bias_add_backward(const SumOutput& dbias, float* partials, const void* dout, int64_t rows, int64_t cols,
                       DType dtype, cudaStream_t stream) {
  if (cols == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    with_units<T>(cols, {dout}, [&](auto units) {
      constexpr int V = decltype(units)::value;
      bias_backward_kernel<T, V><<<column_sum_grid(cols, V), column_sum_block(), 0, stream>>>(
          partials, static_cast<const T*>(dout), rows, cols);
    });
  });
  SG_CHECK_LAUNCH();
  finish_column_sums_into<1>({dbias}, {partials}, cols, stream);
}

}  // namespace sg::cuda
