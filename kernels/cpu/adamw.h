// CPU AdamW over a flat buffer (a whole parameter, or one rank's shard of it:
// the update is elementwise, which is why ZeRO can shard optimizer states).
// The math is in kernels/adamw_math.h.
//
// Read next: kernels/cpu/rng.h.
#pragma once

#include <cstdint>

#include "kernels/adamw_math.h"

namespace sg::cpu {

void adamw_update(float* param, float* m, float* v, const float* grad, int64_t n, const AdamWParams& hp);

}  // namespace sg::cpu
