// Where a column sum lands (a bias's or a LayerNorm's parameter gradient,
// kernels/cuda/column_sums.cuh): a buffer of `dtype`, written, or added to
// with `add` (a gradient accumulating in its f32 buffer). Plain C++: host
// code sizes the sums' scratch with kColumnSumChunks.
#pragma once

#include "kernels/dtype.h"

namespace sg::cuda {

struct SumOutput {
  void* data = nullptr;
  DType dtype = DType::f32;
  bool add = false;
};

// The chunks of rows that stage 1 of a column sum splits the rows into:
// the callers' scratch holds kColumnSumChunks partial rows per sum.
constexpr int64_t kColumnSumChunks = 128;

}  // namespace sg::cuda
