#include "optim/schedule.h"

#include <cmath>

namespace sg {

double WarmupCosine::lr(int64_t step) const {
  if (step < warmup_steps) return max_lr * double(step + 1) / double(warmup_steps);
  if (step >= total_steps) return min_lr;
  double ratio = double(step - warmup_steps) / double(total_steps - warmup_steps);
  return min_lr + 0.5 * (1.0 + std::cos(M_PI * ratio)) * (max_lr - min_lr);
}

}  // namespace sg
