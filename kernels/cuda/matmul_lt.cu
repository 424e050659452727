// GEMMs through cuBLASLt, with the bias added in the GEMM's epilogue.
//
// cuBLASLt takes the problem as descriptors (operation, layouts, a
// preference) and returns candidate algorithms from a heuristic. Asking is
// not free, so the first answer for each problem is kept: a training step
// repeats the same few dozen shapes, and every later call is one lookup and
// one cublasLtMatmul. The layouts follow matmul.cu's row-major trick: the
// row-major product C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T,
// so Lt's "A" is our B and its "B" our A. The bias is then a vector over the
// rows of Lt's column-major D, which are our output's columns: exactly a
// linear layer's bias.
//
// The heuristic excludes algorithms that need more alignment than the
// pointers have (views into a tensor may start anywhere), so each pointer's
// alignment is part of the problem's key. The bias has no such preference,
// and Lt's bias epilogue has been reported to fault on a bias that is not
// 16-byte aligned (a ZeRO flat buffer can put a bias anywhere), so such a
// bias is added by a kernel after the GEMM instead. When Lt offers nothing,
// the caller falls back to cublasGemmStridedBatchedEx.
//
// GELU rides the same epilogue (LtEpilogue): GELU_AUX_BIAS adds the bias,
// writes that sum to an auxiliary matrix (GELU's input, which backward
// needs) and GELU of it to C, and DGELU multiplies a product by GELU's
// derivative at the auxiliary matrix's values: an MLP's first GEMM and its
// input gradient's GEMM, each without a pass of its own over the (tokens,
// 4C) activation. The auxiliary matrix has C's shape, dense, so its leading
// dimension (in Lt's column-major terms, at least D's rows and a multiple
// of 8) is n. Its pointer, as the bias's, is set before asking the
// heuristic, which judges alignment by it.
//
// BGRADB sums Lt's B over k, one sum for each of D's columns: in our terms
// the sums of op(A)'s rows, which for a weight gradient dW = dy^T x are the
// column sums of dy, the bias's gradient, made while the GEMM reads dy
// anyway. Lt takes it only with its B read transposed (our A: dy^T, a
// transposed view), and writes the sums in C's type: f32 under bf16
// operands, straight into the bias's f32 gradient buffer.
//
// C may be f32 under 16-bit operands: a weight gradient goes straight into
// its f32 gradient buffer (beta = 1 adds to it), as Megatron's "gradient
// accumulation fusion" does, instead of a 16-bit product and a cast.
//
// The heuristic's first answer is not always the fastest: on an H100,
// bench_gemm --candidates found another 5-28% faster for four of GPT-2's
// shapes (docs/performance.md). SG_GEMM_AUTOTUNE=N (2-16) times the first
// N answers on a problem's first call, on that call's own operands, and
// keeps the fastest. It is off by default: timings are noisy, so two
// processes may keep different algorithms, which round differently, and a
// run is then no longer repeatable bit for bit (a resumed checkpoint's
// included) -- the guarantee every default here keeps.
#include <cublasLt.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/matmul_lt.h"
#include "kernels/env_switch.h"

namespace sg::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // what cuBLAS recommends for Hopper
constexpr uint32_t kBiasAlignment = 16;

#define CUBLASLT_CHECK(call) CUBLAS_CHECK(call)

cudaDataType lt_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return CUDA_R_32F;
    case DType::bf16: return CUDA_R_16BF;
    case DType::f16: return CUDA_R_16F;
    default: SG_FAIL("cuBLASLt GEMM: unsupported dtype ", dtype_name(dtype));
  }
}

// The largest power of two (up to 256) dividing the address.
uint32_t alignment_of(const void* pointer) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(pointer);
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
}

struct Key {
  int64_t m, n, k, lda, ldb, ldc, batch, stride_a, stride_b, stride_c;
  bool trans_a, trans_b, bias, accumulate, row_sums;
  LtEpilogue::Gelu gelu;
  DType dtype, c_dtype;
  uint32_t align_a, align_b, align_c, align_bias, align_aux;
  int device;
  int candidate;  // which of the heuristic's answers: 0 but under bench_gemm --candidates
  int autotune;   // SG_GEMM_AUTOTUNE's count when the plan was made: a plan of each setting
  auto tie() const {
    return std::tie(m, n, k, lda, ldb, ldc, batch, stride_a, stride_b, stride_c, trans_a, trans_b, bias, accumulate,
                    row_sums, gelu, dtype, c_dtype, align_a, align_b, align_c, align_bias, align_aux, device, candidate,
                    autotune);
  }
  bool operator<(const Key& other) const { return tie() < other.tie(); }
};

struct Plan {
  bool usable = false;  // false: Lt offered no algorithm; use the cuBLAS path
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  std::vector<cublasLtMatmulAlgo_t> to_time;  // SG_GEMM_AUTOTUNE: the heuristic's answers, timed on first use
};

struct DeviceState {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

std::mutex g_mutex;
std::map<Key, Plan> g_plans;  // kept for the process: a few dozen shapes
std::array<DeviceState, 16> g_devices{};
int g_candidate = 0;         // set_lt_candidate
int g_candidates_found = 0;  // how many answers the heuristic gave the newest plan
int g_plans_autotuned = 0;   // lt_plans_autotuned
LtEpilogueCounts g_epilogue_gemms;  // lt_epilogue_gemms
constexpr int kMaxCandidates = 16;

// SG_GEMM_AUTOTUNE: how many of the heuristic's answers to time (0: take its
// first). Read at each call and part of the plan's key, so one process can
// run with it and without (bench_gpt --variants).
int autotune_count() {
  const char* setting = std::getenv("SG_GEMM_AUTOTUNE");
  if (setting == nullptr || *setting == '\0') return 0;
  char* end = nullptr;
  const long count = std::strtol(setting, &end, 10);
  SG_CHECK(*end == '\0' && count >= 0 && count <= kMaxCandidates, "SG_GEMM_AUTOTUNE=", setting,
           ": give how many of cuBLASLt's algorithms to time for each GEMM shape, 2 to ", kMaxCandidates,
           " (0 or unset: take the heuristic's first)");
  return count >= 2 ? int(count) : 0;
}

DeviceState& state_for(int device) {
  DeviceState& state = g_devices[size_t(device)];
  if (state.handle == nullptr) {
    CUBLASLT_CHECK(cublasLtCreate(&state.handle));
    CUDA_CHECK(cudaMalloc(&state.workspace, kWorkspaceBytes));
  }
  return state;
}

// A column-major (rows, cols) layout with leading dimension ld, batched.
cublasLtMatrixLayout_t layout(cudaDataType type, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                              int64_t stride) {
  cublasLtMatrixLayout_t l = nullptr;
  CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&l, type, uint64_t(rows), uint64_t(cols), ld));
  if (batch > 1) {
    const int32_t count = int32_t(batch);
    CUBLASLT_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
    CUBLASLT_CHECK(
        cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
  return l;
}

// Points a plan's epilogue at this call's vector (the bias read, or the
// sums written) and aux matrix.
void point_epilogue(cublasLtMatmulDesc_t desc, const Key& key, const LtEpilogue& e) {
  if (key.bias || key.row_sums) {
    const void* vector = key.bias ? e.bias : e.a_row_sums;
    CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &vector, sizeof(vector)));
  }
  if (key.gelu != LtEpilogue::Gelu::none) {
    CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &e.aux, sizeof(e.aux)));
  }
}

// The epilogue the key asks for, pointed at this (the first) call's vectors.
void set_epilogue(cublasLtMatmulDesc_t desc, const Key& key, const LtEpilogue& e) {
  cublasLtEpilogue_t epilogue = key.bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  if (key.gelu == LtEpilogue::Gelu::forward) {
    epilogue = key.bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
  }
  if (key.gelu == LtEpilogue::Gelu::backward) epilogue = CUBLASLT_EPILOGUE_DGELU;
  if (key.row_sums) epilogue = CUBLASLT_EPILOGUE_BGRADB;
  if (epilogue == CUBLASLT_EPILOGUE_DEFAULT) return;
  CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
  if (key.gelu != LtEpilogue::Gelu::none) {
    const int64_t aux_ld = key.n;  // Lt's column-major D is (n, m): the aux matrix too, dense
    CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof(aux_ld)));
  }
  point_epilogue(desc, key, e);
}

Plan make_plan(const Key& key, const LtEpilogue& epilogue, DeviceState& state) {
  const int autotune = key.autotune;
  Plan plan;
  const cudaDataType type = lt_type(key.dtype);
  CUBLASLT_CHECK(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // Lt's A is our B, its B our A (see the top of the file).
  const cublasOperation_t op_a = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
  set_epilogue(plan.desc, key, epilogue);
  // Stored shapes, column-major: our B is (k, n) row-major = (n, k) column-major, or (k, n) when transposed.
  plan.a = key.trans_b ? layout(type, key.k, key.n, key.ldb, key.batch, key.stride_b)
                       : layout(type, key.n, key.k, key.ldb, key.batch, key.stride_b);
  plan.b = key.trans_a ? layout(type, key.m, key.k, key.lda, key.batch, key.stride_a)
                       : layout(type, key.k, key.m, key.lda, key.batch, key.stride_a);
  plan.c = layout(lt_type(key.c_dtype), key.n, key.m, key.ldc, key.batch, key.stride_c);

  cublasLtMatmulPreference_t preference = nullptr;
  CUBLASLT_CHECK(cublasLtMatmulPreferenceCreate(&preference));
  const size_t workspace = kWorkspaceBytes;
  CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                      &workspace, sizeof(workspace)));
  // Lt's A is our B: the alignments swap too.
  const std::array<std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t>, 4> alignments{{
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_c},
  }};
  for (const auto& [attribute, value] : alignments) {
    CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, attribute, &value, sizeof(value)));
  }
  // The heuristic's first answer, or (bench_gemm) its candidate-th, to time
  // them against each other, or (SG_GEMM_AUTOTUNE) its first `autotune`.
  std::array<cublasLtMatmulHeuristicResult_t, kMaxCandidates> results{};
  int found = 0;
  const int wanted = key.candidate == 0 && autotune > 1 ? autotune : key.candidate + 1;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(state.handle, plan.desc, plan.a, plan.b, plan.c,
                                                               plan.c, preference, wanted, results.data(), &found);
  cublasLtMatmulPreferenceDestroy(preference);
  if (status != CUBLAS_STATUS_SUCCESS) found = 0;
  g_candidates_found = found;
  const cublasLtMatmulHeuristicResult_t& result = results[size_t(key.candidate)];
  plan.usable = found > key.candidate && result.state == CUBLAS_STATUS_SUCCESS;
  if (plan.usable) plan.algo = result.algo;
  if (plan.usable && key.candidate == 0 && autotune > 1) {
    for (int i = 0; i < found; ++i) {
      if (results[size_t(i)].state == CUBLAS_STATUS_SUCCESS) plan.to_time.push_back(results[size_t(i)].algo);
    }
    if (plan.to_time.size() < 2) plan.to_time.clear();  // nothing to choose between
  }
  return plan;
}

// The bytes C spans: Lt's column-major (n, m) with leading dimension ldc, batched.
size_t c_span_bytes(const Key& key) {
  const int64_t elements = (key.batch - 1) * key.stride_c + (key.m - 1) * key.ldc + key.n;
  return size_t(elements) * dtype_size(key.c_dtype);
}

// SG_GEMM_AUTOTUNE: times each of plan.to_time on this call's operands (a
// warm-up, then the best of three, between events on the call's stream) and
// keeps the fastest in plan.algo. The trials write into c itself when beta
// is 0, as the call that follows overwrites it; with beta != 0 (a gradient
// added to its buffer) they write into scratch, so that the sum c holds is
// added to exactly once. An algorithm refused at launch is passed over; if
// the scratch cannot be had, the heuristic's first answer stays.
void keep_fastest(Plan& plan, const Key& key, DeviceState& state, void* c, const void* a, const void* b, float alpha,
                  float beta, cudaStream_t stream) {
  std::vector<cublasLtMatmulAlgo_t> candidates;
  candidates.swap(plan.to_time);  // timed once, whatever happens below
  void* out = c;
  void* scratch = nullptr;
  if (beta != 0.0f) {
    if (cudaMalloc(&scratch, c_span_bytes(key)) != cudaSuccess) {
      (void)cudaGetLastError();
      return;
    }
    out = scratch;
  }
  cudaEvent_t start = nullptr, stop = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&start, cudaEventDefault));
  CUDA_CHECK(cudaEventCreateWithFlags(&stop, cudaEventDefault));
  float best = std::numeric_limits<float>::infinity();
  for (const cublasLtMatmulAlgo_t& algo : candidates) {
    float fastest = std::numeric_limits<float>::infinity();
    for (int run = 0; run < 4; ++run) {
      CUDA_CHECK(cudaEventRecord(start, stream));
      const cublasStatus_t status = cublasLtMatmul(state.handle, plan.desc, &alpha, b, plan.a, a, plan.b, &beta, out,
                                                   plan.c, out, plan.c, &algo, state.workspace, kWorkspaceBytes, stream);
      if (status != CUBLAS_STATUS_SUCCESS) {
        fastest = std::numeric_limits<float>::infinity();
        break;
      }
      CUDA_CHECK(cudaEventRecord(stop, stream));
      CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0.0f;
      CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      if (run > 0 && ms < fastest) fastest = ms;  // run 0 warms up
    }
    if (fastest < best) {
      best = fastest;
      plan.algo = algo;
    }
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  if (scratch != nullptr) CUDA_CHECK(cudaFree(scratch));  // waits for the trials
  ++g_plans_autotuned;
}

bool enabled() {
  static const bool on = env_switch_on("SG_CUBLASLT");
  return on;
}

}  // namespace

bool lt_matmul(void* c, DType c_dtype, const void* a, const void* b, const LtEpilogue& epilogue, const GemmShape& s,
               DType dtype, cudaStream_t stream) {
  const void* bias = epilogue.bias;
  const bool gelu = epilogue.gelu != LtEpilogue::Gelu::none;
  if (!enabled() || s.batch > 65535) return false;
  if ((bias != nullptr || gelu) && c_dtype != dtype) return false;  // epilogues are kept to one dtype
  if (bias != nullptr && alignment_of(bias) < kBiasAlignment) return false;  // the caller adds it after the GEMM
  if (gelu && (epilogue.aux == nullptr || s.batch != 1 || s.beta != 0.0f || s.ldc != s.n)) return false;
  if (epilogue.gelu == LtEpilogue::Gelu::backward && bias != nullptr) return false;  // no such epilogue
  const bool row_sums = epilogue.a_row_sums != nullptr;
  if (row_sums && (bias != nullptr || gelu || !s.trans_a || s.batch != 1 ||
                   alignment_of(epilogue.a_row_sums) < kBiasAlignment)) {
    return false;  // BGRADB alone, and only where Lt takes it (see the top of the file)
  }
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  const uint32_t align_vector = bias ? alignment_of(bias) : row_sums ? alignment_of(epilogue.a_row_sums) : 256u;
  const Key key{s.m,           s.n,           s.k,
                s.lda,         s.ldb,         s.ldc,
                s.batch,       s.stride_a,    s.stride_b,
                s.stride_c,    s.trans_a,     s.trans_b,
                bias != nullptr, s.beta != 0.0f, row_sums,
                epilogue.gelu, dtype,         c_dtype,
                alignment_of(a), alignment_of(b), alignment_of(c),
                align_vector,  gelu ? alignment_of(epilogue.aux) : 256u,
                device,        g_candidate,   autotune_count()};
  std::lock_guard<std::mutex> lock(g_mutex);
  DeviceState& state = state_for(device);
  auto it = g_plans.find(key);
  if (it == g_plans.end()) it = g_plans.emplace(key, make_plan(key, epilogue, state)).first;
  Plan& plan = it->second;
  if (!plan.usable) return false;
  point_epilogue(plan.desc, key, epilogue);
  const float alpha = s.alpha, beta = s.beta;
  if (!plan.to_time.empty()) keep_fastest(plan, key, state, c, a, b, alpha, beta, stream);
  const cublasStatus_t status = cublasLtMatmul(state.handle, plan.desc, &alpha, b, plan.a, a, plan.b, &beta, c,
                                               plan.c, c, plan.c, &plan.algo, state.workspace, kWorkspaceBytes, stream);
  if (status != CUBLAS_STATUS_SUCCESS) {
    // Refused at launch (nothing ran): this problem goes to cuBLAS (and
    // the epilogue's work to kernels of its own) from now on.
    static const char* const kEpilogues[] = {"", " GELU", " GELU-backward"};
    std::fprintf(stderr, "shardgrad: cublasLtMatmul refused a %lldx%lldx%lld %s%s GEMM (%s); using cuBLAS for it\n",
                 (long long)s.m, (long long)s.n, (long long)s.k, dtype_name(dtype).data(),
                 row_sums ? " bias-gradient" : kEpilogues[int(epilogue.gelu)], cublasGetStatusString(status));
    plan.usable = false;
    return false;
  }
  if (key.gelu != LtEpilogue::Gelu::none) ++g_epilogue_gemms.gelu;
  if (key.row_sums) ++g_epilogue_gemms.row_sums;
  return true;
}

void set_lt_candidate(int candidate) {
  SG_CHECK(candidate >= 0 && candidate < kMaxCandidates, "set_lt_candidate: ", candidate, " is not in [0, ",
           kMaxCandidates, ")");
  std::lock_guard<std::mutex> lock(g_mutex);
  g_candidate = candidate;
}

int lt_candidates_found() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_candidates_found;
}

int lt_plans_autotuned() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_plans_autotuned;
}

LtEpilogueCounts lt_epilogue_gemms() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_epilogue_gemms;
}

}  // namespace sg::cuda
