// CPU AdamW over a flat buffer (a whole parameter, or one rank's shard of it:
// the update is elementwise, which is why ZeRO can shard optimizer states).
// The math is in kernels/adamw_math.h.
//
// Read next: kernels/cpu/rng.h.
#pragma once

#include <cstdint>

#include "kernels/adamw_math.h"
#include "kernels/dtype.h"

namespace sg::cpu {

// copy (optional): also writes each updated parameter rounded to copy_dtype
// (bf16 or f16) there, in the same pass: mixed precision's 16-bit parameters
// from the f32 masters without a second pass over the shard.
void adamw_update(float* param, float* m, float* v, const float* grad, int64_t n, const AdamWParams& hp,
                  void* copy = nullptr, DType copy_dtype = DType::bf16);

}  // namespace sg::cpu
