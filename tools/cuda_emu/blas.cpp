// The cuBLAS and cuBLASLt calls shardgrad makes, computed on the host for the
// emulator (tools/cuda_emu/simt.h). Linked instead of libcublas and
// libcublasLt; the toolkit's headers declare them, so signatures are checked.
//
// Both compute the column-major batched GEMM D = alpha op(A) op(B) + beta C
// with f64 sums, rounding once into D's type, queued on the handle's (or the
// call's) stream like any other device work (runtime.h). What this checks is how the
// callers describe their problems: transposes, leading dimensions, batch
// strides, which operand is which under the row-major trick, the bias
// epilogue broadcasting along D's rows, and GELU's two epilogues with their
// auxiliary matrix (GELU_AUX_BIAS writes GELU's input there, DGELU reads
// it; the tanh form, as an RTX 3060's cuBLASLt 13 computes it: a public
// test of the card's epilogues checks exactly these formulas), and
// BGRADB, which writes the sums of op(B) over k (a bias's gradient from a
// weight gradient's GEMM; the card's test again). Lt descriptors take only the
// attributes kernels/cuda/matmul_lt.cu sets; any other attribute is refused
// (CUBLAS_STATUS_NOT_SUPPORTED) rather than silently ignored. A layout that
// does not fit the operation (m, n, k disagree; ld smaller than the rows) is
// refused as the library would: CUBLAS_STATUS_INVALID_VALUE.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "tools/cuda_emu/runtime.h"

namespace {

double load(const void* base, cudaDataType type, int64_t index) {
  switch (type) {
    case CUDA_R_32F: return double(static_cast<const float*>(base)[index]);
    case CUDA_R_16BF: return double(__bfloat162float(static_cast<const __nv_bfloat16*>(base)[index]));
    case CUDA_R_16F: return double(__half2float(static_cast<const __half*>(base)[index]));
    default: return 0.0;
  }
}

void store(void* base, cudaDataType type, int64_t index, double value) {
  switch (type) {
    case CUDA_R_32F: static_cast<float*>(base)[index] = float(value); break;
    case CUDA_R_16BF: static_cast<__nv_bfloat16*>(base)[index] = __float2bfloat16_rn(float(value)); break;
    case CUDA_R_16F: static_cast<__half*>(base)[index] = __float2half_rn(float(value)); break;
    default: break;
  }
}

bool supported(cudaDataType type) { return type == CUDA_R_32F || type == CUDA_R_16BF || type == CUDA_R_16F; }

// Under CUBLAS_COMPUTE_32F both libraries take A and B of one type and C of
// the same type, or f32 C under 16-bit A and B (cublasGemmEx's table).
bool supported(cudaDataType ab, cudaDataType c) { return supported(ab) && (c == ab || c == CUDA_R_32F); }

// GELU, tanh form (kernels/cpu/elementwise.h), and its derivative.
double gelu(double x) { return 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
double gelu_grad(double x) {
  const double k = 0.7978845608028654, c = 0.044715, t = std::tanh(k * (x + c * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * c * x * x);
}

// What an Lt epilogue adds to the plain product (the classic calls: none).
struct Epilogue {
  const void* bias = nullptr;  // added over D's rows (in D's type)
  enum Gelu { kNone, kForward, kBackward } gelu = kNone;
  void* aux = nullptr;  // GELU's input: written (kForward), read (kBackward); D's type
  int64_t aux_ld = 0;
  void* b_sums = nullptr;  // BGRADB: sum over k of op(B)(k, col), for each of D's columns, in D's type
};

struct Operand {
  const void* data;
  cudaDataType type;
  int64_t ld, stride;
  bool transposed;
  // op(X)(row, col) of batch b, column-major storage.
  double at(int64_t b, int64_t row, int64_t col) const {
    return load(data, type, b * stride + (transposed ? col + row * ld : row + col * ld));
  }
};

// D(b) = alpha op(A)(b) op(B)(b) + beta C(b) [+ bias over D's rows]; C may
// be D. With GELU forward, that sum goes to aux (rounded to D's type) and
// D = gelu(sum); backward, D = sum * gelu'(aux). (Batched epilogues are
// refused before this: one matrix.)
void gemm(int64_t m, int64_t n, int64_t k, int64_t batch, double alpha, const Operand& a, const Operand& b,
          double beta, const void* c, int64_t ldc, int64_t stride_c, void* d, cudaDataType d_type, int64_t ldd,
          int64_t stride_d, const Epilogue& epilogue = {}) {
  for (int64_t p = 0; p < batch; ++p) {
    for (int64_t col = 0; epilogue.b_sums != nullptr && col < n; ++col) {
      double sum = 0.0;
      for (int64_t i = 0; i < k; ++i) sum += b.at(p, i, col);
      store(epilogue.b_sums, d_type, col, sum);  // not scaled by alpha
    }
    for (int64_t col = 0; col < n; ++col) {
      for (int64_t row = 0; row < m; ++row) {
        double sum = 0.0;
        for (int64_t i = 0; i < k; ++i) sum += a.at(p, row, i) * b.at(p, i, col);
        double value = alpha * sum;
        if (beta != 0.0) value += beta * load(c, d_type, p * stride_c + row + col * ldc);
        if (epilogue.bias != nullptr) value += load(epilogue.bias, d_type, row);
        const int64_t at_aux = row + col * epilogue.aux_ld;
        if (epilogue.gelu == Epilogue::kForward) {
          store(epilogue.aux, d_type, at_aux, value);
          value = gelu(value);
        } else if (epilogue.gelu == Epilogue::kBackward) {
          value *= gelu_grad(load(epilogue.aux, d_type, at_aux));
        }
        store(d, d_type, p * stride_d + row + col * ldd, value);
      }
    }
  }
}

// What the library refuses of a classic cuBLAS GEMM call (types, sizes,
// leading dimensions), as the status it would return.
cublasStatus_t check_call(cublasOperation_t transa, cublasOperation_t transb, int64_t m, int64_t n, int64_t k,
                          cudaDataType Atype, int64_t lda, cudaDataType Btype, int64_t ldb, cudaDataType Ctype,
                          int64_t ldc, int64_t batch, cublasComputeType_t compute) {
  if (Atype != Btype || !supported(Atype, Ctype) || compute != CUBLAS_COMPUTE_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  const int64_t a_rows = transa == CUBLAS_OP_N ? m : k, b_rows = transb == CUBLAS_OP_N ? k : n;
  if (m < 0 || n < 0 || k < 0 || batch < 0 || lda < std::max<int64_t>(1, a_rows) ||
      ldb < std::max<int64_t>(1, b_rows) || ldc < std::max<int64_t>(1, m)) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  return CUBLAS_STATUS_SUCCESS;
}

// The stream cublasSetStream set; GEMMs are queued on it.
struct BlasHandle {
  cudaStream_t stream = nullptr;
};

struct LtDesc {
  cublasOperation_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  void* aux = nullptr;
  int64_t aux_ld = 0;
};

bool reads_bias(cublasLtEpilogue_t e) { return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS; }
bool has_aux(cublasLtEpilogue_t e) { return e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || e == CUBLASLT_EPILOGUE_DGELU; }
struct LtLayout {
  cudaDataType type;
  int64_t rows, cols, ld;
  int32_t batch = 1;
  int64_t stride = 0;
};

std::mutex g_mutex;
std::map<const void*, LtDesc> g_descs;
std::map<const void*, LtLayout> g_layouts;

template <typename T>
bool read_attribute(T& out, const void* buffer, size_t bytes) {
  if (bytes != sizeof(T)) return false;
  std::memcpy(&out, buffer, sizeof(T));
  return true;
}

}  // namespace

extern "C" {

// ---- cuBLAS -------------------------------------------------------------------

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  *handle = reinterpret_cast<cublasHandle_t>(new BlasHandle{});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  reinterpret_cast<BlasHandle*>(handle)->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS (emulator: other)";
  }
}

cublasStatus_t cublasGemmStridedBatchedEx_64(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                             int64_t m, int64_t n, int64_t k, const void* alpha, const void* A,
                                             cudaDataType Atype, int64_t lda, long long int strideA, const void* B,
                                             cudaDataType Btype, int64_t ldb, long long int strideB, const void* beta,
                                             void* C, cudaDataType Ctype, int64_t ldc, long long int strideC,
                                             int64_t batchCount, cublasComputeType_t computeType, cublasGemmAlgo_t) {
  const cublasStatus_t status =
      check_call(transa, transb, m, n, k, Atype, lda, Btype, ldb, Ctype, ldc, batchCount, computeType);
  if (status != CUBLAS_STATUS_SUCCESS) return status;
  const Operand a{A, Atype, lda, strideA, transa != CUBLAS_OP_N}, b{B, Btype, ldb, strideB, transb != CUBLAS_OP_N};
  const double alpha_value = *static_cast<const float*>(alpha), beta_value = *static_cast<const float*>(beta);
  sg_emu::enqueue(reinterpret_cast<BlasHandle*>(handle)->stream, "cublasGemmStridedBatchedEx", [=] {
    gemm(m, n, k, batchCount, alpha_value, a, b, beta_value, C, ldc, strideC, C, Ctype, ldc, strideC);
  });
  return CUBLAS_STATUS_SUCCESS;
}

// Each matrix's address is read from the pointer arrays (device memory) when
// the GEMM runs, as the library does.
cublasStatus_t cublasGemmBatchedEx_64(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                      int64_t m, int64_t n, int64_t k, const void* alpha, const void* const Aarray[],
                                      cudaDataType Atype, int64_t lda, const void* const Barray[], cudaDataType Btype,
                                      int64_t ldb, const void* beta, void* const Carray[], cudaDataType Ctype,
                                      int64_t ldc, int64_t batchCount, cublasComputeType_t computeType,
                                      cublasGemmAlgo_t) {
  const cublasStatus_t status =
      check_call(transa, transb, m, n, k, Atype, lda, Btype, ldb, Ctype, ldc, batchCount, computeType);
  if (status != CUBLAS_STATUS_SUCCESS) return status;
  const double alpha_value = *static_cast<const float*>(alpha), beta_value = *static_cast<const float*>(beta);
  sg_emu::enqueue(reinterpret_cast<BlasHandle*>(handle)->stream, "cublasGemmBatchedEx", [=] {
    for (int64_t p = 0; p < batchCount; ++p) {
      const Operand a{Aarray[p], Atype, lda, 0, transa != CUBLAS_OP_N}, b{Barray[p], Btype, ldb, 0, transb != CUBLAS_OP_N};
      gemm(m, n, k, 1, alpha_value, a, b, beta_value, Carray[p], ldc, 0, Carray[p], Ctype, ldc, 0);
    }
  });
  return CUBLAS_STATUS_SUCCESS;
}

// ---- cuBLASLt -----------------------------------------------------------------

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  *handle = reinterpret_cast<cublasLtHandle_t>(new int(0));
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute, cudaDataType_t scale) {
  if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  *desc = new cublasLtMatmulDescOpaque_t{};
  std::lock_guard<std::mutex> lock(g_mutex);
  g_descs[*desc] = LtDesc{};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute,
                                              const void* buffer, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_mutex);
  LtDesc& d = g_descs.at(desc);
  bool ok = false;
  switch (attribute) {
    case CUBLASLT_MATMUL_DESC_TRANSA: ok = read_attribute(d.trans_a, buffer, bytes); break;
    case CUBLASLT_MATMUL_DESC_TRANSB: ok = read_attribute(d.trans_b, buffer, bytes); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
      ok = read_attribute(d.epilogue, buffer, bytes) &&
           (d.epilogue == CUBLASLT_EPILOGUE_DEFAULT || reads_bias(d.epilogue) || has_aux(d.epilogue) ||
            d.epilogue == CUBLASLT_EPILOGUE_BGRADB);
      break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: ok = read_attribute(d.bias, buffer, bytes); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: ok = read_attribute(d.aux, buffer, bytes); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: ok = read_attribute(d.aux_ld, buffer, bytes); break;
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  return ok ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (!supported(type)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (ld < std::max<int64_t>(1, int64_t(rows))) return CUBLAS_STATUS_INVALID_VALUE;  // column-major
  *layout = new cublasLtMatrixLayoutOpaque_t{};
  std::lock_guard<std::mutex> lock(g_mutex);
  g_layouts[*layout] = LtLayout{type, int64_t(rows), int64_t(cols), ld};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout,
                                                cublasLtMatrixLayoutAttribute_t attribute, const void* buffer,
                                                size_t bytes) {
  std::lock_guard<std::mutex> lock(g_mutex);
  LtLayout& l = g_layouts.at(layout);
  bool ok = false;
  switch (attribute) {
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: ok = read_attribute(l.batch, buffer, bytes) && l.batch >= 1; break;
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET: ok = read_attribute(l.stride, buffer, bytes); break;
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  return ok ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* preference) {
  *preference = new cublasLtMatmulPreferenceOpaque_t{};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t preference) {
  delete preference;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t,
                                                    cublasLtMatmulPreferenceAttributes_t attribute, const void*,
                                                    size_t) {
  switch (attribute) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: return CUBLAS_STATUS_SUCCESS;
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
}

}  // extern "C"

namespace {

// The problem the descriptors describe, or a status saying why it is not one.
// GELU's auxiliary matrix: its leading dimension must be at least D's rows
// and (the header says) a multiple of 8, and matmul_lt.cu asks for it
// only unbatched; its pointer is needed by the matmul, not the heuristic
// (the real library answers so: INVALID_VALUE, NOT_SUPPORTED at the call).
cublasStatus_t check_problem(const LtDesc& d, const LtLayout& a, const LtLayout& b, const LtLayout& c,
                             const LtLayout& dl) {
  if (a.type != b.type || !supported(a.type, c.type) || c.type != dl.type) return CUBLAS_STATUS_NOT_SUPPORTED;
  const bool bgrad = d.epilogue == CUBLASLT_EPILOGUE_BGRADB;
  // Asked of it: one type throughout, but for a bias gradient with an f32 C under 16-bit operands.
  if (d.epilogue != CUBLASLT_EPILOGUE_DEFAULT && !bgrad && c.type != a.type) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (bgrad && (d.trans_b == CUBLAS_OP_N || dl.batch != 1)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (has_aux(d.epilogue) && (d.aux_ld < dl.rows || d.aux_ld % 8 != 0)) return CUBLAS_STATUS_INVALID_VALUE;
  if (has_aux(d.epilogue) && dl.batch != 1) return CUBLAS_STATUS_NOT_SUPPORTED;
  const int64_t m = dl.rows, n = dl.cols;
  const int64_t a_m = d.trans_a == CUBLAS_OP_N ? a.rows : a.cols, a_k = d.trans_a == CUBLAS_OP_N ? a.cols : a.rows;
  const int64_t b_k = d.trans_b == CUBLAS_OP_N ? b.rows : b.cols, b_n = d.trans_b == CUBLAS_OP_N ? b.cols : b.rows;
  if (a_m != m || b_n != n || a_k != b_k || c.rows != m || c.cols != n) return CUBLAS_STATUS_INVALID_VALUE;
  if (a.batch != dl.batch || b.batch != dl.batch || c.batch != dl.batch) return CUBLAS_STATUS_INVALID_VALUE;
  if (reads_bias(d.epilogue) && d.bias == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

extern "C" {

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t d, cublasLtMatmulPreference_t, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int* found) {
  std::lock_guard<std::mutex> lock(g_mutex);
  *found = 0;
  if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
  const cublasStatus_t status = check_problem(g_descs.at(desc), g_layouts.at(a), g_layouts.at(b), g_layouts.at(c),
                                              g_layouts.at(d));
  if (status != CUBLAS_STATUS_SUCCESS) return status;
  // Up to three answers, as a real heuristic offers several (bench_gemm
  // --candidates times them); all run the same here.
  *found = std::min(requested, 3);
  for (int i = 0; i < *found; ++i) {
    results[i] = cublasLtMatmulHeuristicResult_t{};
    results[i].state = CUBLAS_STATUS_SUCCESS;
  }
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t desc, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t a_layout, const void* B, cublasLtMatrixLayout_t b_layout,
                              const void* beta, const void* C, cublasLtMatrixLayout_t c_layout, void* D,
                              cublasLtMatrixLayout_t d_layout, const cublasLtMatmulAlgo_t*, void*, size_t,
                              cudaStream_t stream) {
  LtDesc d;
  LtLayout a, b, c, dl;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    d = g_descs.at(desc);
    a = g_layouts.at(a_layout), b = g_layouts.at(b_layout), c = g_layouts.at(c_layout), dl = g_layouts.at(d_layout);
  }
  const cublasStatus_t status = check_problem(d, a, b, c, dl);
  if (status != CUBLAS_STATUS_SUCCESS) return status;
  // Real Lt kernels have been reported to fault (a sticky CUDA error, not a
  // status) on a bias that is not 16-byte aligned; matmul_lt.cu must never
  // pass one, so here it ends the process as the fault would.
  if (d.epilogue == CUBLASLT_EPILOGUE_BGRADB && d.bias == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  if (has_aux(d.epilogue) && d.aux == nullptr) {
    return d.epilogue == CUBLASLT_EPILOGUE_DGELU ? CUBLAS_STATUS_INVALID_VALUE : CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (reads_bias(d.epilogue) && reinterpret_cast<uintptr_t>(d.bias) % 16 != 0) {
    std::fprintf(stderr, "CUDA emulator: cublasLtMatmul's bias epilogue got a bias that is not 16-byte aligned; "
                         "on a GPU this faults\n");
    std::abort();
  }
  const int64_t k = d.trans_a == CUBLAS_OP_N ? a.cols : a.rows;
  const Operand op_a{A, a.type, a.ld, a.stride, d.trans_a != CUBLAS_OP_N};
  const Operand op_b{B, b.type, b.ld, b.stride, d.trans_b != CUBLAS_OP_N};
  const double alpha_value = *static_cast<const float*>(alpha), beta_value = *static_cast<const float*>(beta);
  Epilogue epilogue;
  if (reads_bias(d.epilogue)) epilogue.bias = d.bias;
  if (has_aux(d.epilogue)) {
    epilogue.gelu = d.epilogue == CUBLASLT_EPILOGUE_DGELU ? Epilogue::kBackward : Epilogue::kForward;
    epilogue.aux = d.aux, epilogue.aux_ld = d.aux_ld;
  }
  if (d.epilogue == CUBLASLT_EPILOGUE_BGRADB) epilogue.b_sums = const_cast<void*>(d.bias);  // written there
  sg_emu::enqueue(stream, "cublasLtMatmul", [=] {
    gemm(dl.rows, dl.cols, k, dl.batch, alpha_value, op_a, op_b, beta_value, C, c.ld, c.stride, D, dl.type, dl.ld,
         dl.stride, epilogue);
  });
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
