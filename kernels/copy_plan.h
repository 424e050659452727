// How a strided copy should move its bytes (host code, shared by the CUDA
// kernel and its CPU test).
//
// A view's copy names each dimension's extent and its stride on both sides,
// in elements. Three rewrites keep the meaning and make the GPU's work
// cheaper:
//   1. dimensions of extent 1 go (they move nothing);
//   2. a dimension that steps exactly over its inner neighbour on both sides
//      merges with it (a contiguous (B, T, C) is one run of B*T*C);
//   3. when the innermost run is contiguous on both sides, elements are moved
//      as 16-, 8- or 4-byte words where every stride and both addresses allow
//      it (a head of 64 bf16 values is 8 words of 16 bytes).
// What is left contiguous on both sides is a plain memory copy. The copies
// that turn (B, T, 3, NH, HS) into per-head (B, NH, T, HS) for attention keep
// three dimensions and move 16-byte words: a few index operations per 16
// bytes instead of per element.
//
// Read next: kernels/cuda/elementwise.cu (strided_copy).
#pragma once

#include <cstdint>

namespace sg {

struct CopyPlan {
  static constexpr int kMaxDims = 8;
  int ndim = 0;                   // after the rewrites; 0 when nothing moves
  int64_t word_bytes = 0;         // the unit of the extents and strides below
  int64_t shape[kMaxDims] = {};   // outermost first
  int64_t in_strides[kMaxDims] = {};
  int64_t out_strides[kMaxDims] = {};
  int64_t words = 0;              // product of shape
  bool contiguous = false;        // one run, contiguous on both sides: a memory copy of words * word_bytes

  int64_t bytes() const { return words * word_bytes; }
};

// ndim <= CopyPlan::kMaxDims (callers check); strides in elements of
// element_size bytes; the addresses decide which words are aligned.
inline CopyPlan plan_copy(const int64_t* shape, const int64_t* in_strides, const int64_t* out_strides, int ndim,
                          int64_t element_size, uintptr_t in_address, uintptr_t out_address) {
  CopyPlan plan;
  plan.word_bytes = element_size;
  plan.words = 1;
  for (int d = 0; d < ndim; ++d) plan.words *= shape[d];
  if (plan.words == 0) return plan;
  // Rewrites 1 and 2, walking from the innermost dimension out; kept[] is innermost first.
  int64_t kept_shape[CopyPlan::kMaxDims], kept_in[CopyPlan::kMaxDims], kept_out[CopyPlan::kMaxDims];
  int kept = 0;
  for (int d = ndim - 1; d >= 0; --d) {
    if (shape[d] == 1) continue;
    const int inner = kept - 1;
    if (kept > 0 && in_strides[d] == kept_in[inner] * kept_shape[inner] &&
        out_strides[d] == kept_out[inner] * kept_shape[inner]) {
      kept_shape[inner] *= shape[d];
      continue;
    }
    kept_shape[kept] = shape[d], kept_in[kept] = in_strides[d], kept_out[kept] = out_strides[d];
    ++kept;
  }
  if (kept == 0) kept_shape[0] = 1, kept_in[0] = 1, kept_out[0] = 1, kept = 1;  // one element
  // Rewrite 3: the widest word that divides the inner run, every stride and both addresses.
  if (kept_in[0] == 1 && kept_out[0] == 1) {
    for (int64_t word : {int64_t(16), int64_t(8), int64_t(4)}) {
      if (word <= element_size || word % element_size != 0) continue;
      const int64_t k = word / element_size;
      bool fits = kept_shape[0] % k == 0 && in_address % uintptr_t(word) == 0 && out_address % uintptr_t(word) == 0;
      for (int d = 1; d < kept && fits; ++d) fits = kept_in[d] % k == 0 && kept_out[d] % k == 0;
      if (!fits) continue;
      kept_shape[0] /= k;
      for (int d = 1; d < kept; ++d) kept_in[d] /= k, kept_out[d] /= k;
      plan.word_bytes = word;
      plan.words /= k;
      break;
    }
  }
  plan.ndim = kept;
  for (int d = 0; d < kept; ++d) {  // back to outermost first
    plan.shape[d] = kept_shape[kept - 1 - d];
    plan.in_strides[d] = kept_in[kept - 1 - d];
    plan.out_strides[d] = kept_out[kept - 1 - d];
  }
  plan.contiguous = kept == 1 && kept_in[0] == 1 && kept_out[0] == 1;
  return plan;
}

}  // namespace sg
