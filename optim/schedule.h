// Learning-rate schedules. WarmupCosine is GPT-2/nanoGPT's (train_gpt's
// flags): a linear warmup to max_lr, then a half cosine down to min_lr at
// total_steps, flat after.
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

// DeepSpeed's schedules (deepspeed/runtime/lr_schedules.py), for a config
// that names one: its formulas and its defaults, so that a run ported from
// DeepSpeed keeps the learning rates it had there. lr() takes DeepSpeed's
// iteration, which starts at -1 (the first optimizer step runs at the
// schedule's value "before it has started": min for the first two kinds, 0
// for the cosine) and advances after each applied step (an fp16 step skipped
// for an overflow does not advance it). With W = max(2, warmup_steps):
//
//   g(i) = log(i + 1) / log(W)   (warmup_type "log", DeepSpeed's default)   i < W
//        = i / W                 ("linear")
//   WarmupLR        min + (max - min) g(i), then max
//   WarmupDecayLR   the same warmup, then min + (max - min) max(0, (total - i) / max(1, total - W))
//   WarmupCosineLR  max (r0 + (1 - r0) g(i)), r0 = warmup_min_ratio; then
//                   max (c + (1 - c) (1 + cos(pi p)) / 2), c = cos_min_ratio, p = min(1, (i - W + 1) / max(1, total - W))
struct DeepSpeedSchedule {
  enum class Kind { warmup, warmup_decay, warmup_cosine };
  Kind kind = Kind::warmup_cosine;
  bool log_warmup = true;
  double min_lr = 0.0;   // WarmupLR, WarmupDecayLR: warmup_min_lr
  double max_lr = 1e-3;  // their warmup_max_lr; WarmupCosineLR: the optimizer's lr
  double warmup_min_ratio = 0.0, cos_min_ratio = 1e-4;  // WarmupCosineLR
  int64_t warmup_steps = 1000, total_steps = 0;

  double lr(int64_t iteration) const;
};

}  // namespace sg
