// Where a column sum lands (a bias's or a LayerNorm's parameter gradient,
// kernels/cuda/column_sums.cuh): a buffer of `dtype`, written, or added to
// with `add` (a gradient accumulating in its f32 buffer).
#pragma once

#include "kernels/dtype.h"

namespace sg::cuda {

struct SumOutput {
  void* data = nullptr;
  DType dtype = DType::f32;
  bool add = false;
};

}  // namespace sg::cuda
