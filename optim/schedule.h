// Learning-rate schedules. WarmupCosine is GPT-2/nanoGPT's: a linear warmup
// to max_lr, then a half cosine down to min_lr at total_steps, flat after.
//
//   lr(s) = max_lr * (s + 1) / warmup                        s < warmup
//   lr(s) = min_lr + (max_lr - min_lr) * (1 + cos(pi r)) / 2 r = (s - warmup) / (total - warmup)
//
// Read next: examples/train_gpt.cpp.
#pragma once

#include <cstdint>

namespace sg {

struct WarmupCosine {
  double max_lr = 1e-3;
  double min_lr = 1e-4;
  int64_t warmup_steps = 100;
  int64_t total_steps = 1000;

  double lr(int64_t step) const;  // step counts from 0
};

}  // namespace sg
