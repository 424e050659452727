#include "optim/schedule.h"

#include <algorithm>
#include <cmath>

namespace sg {

double WarmupCosine::lr(int64_t step) const {
  if (step < warmup_steps) return max_lr * double(step + 1) / double(warmup_steps);
  if (step >= total_steps) return min_lr;
  double ratio = double(step - warmup_steps) / double(total_steps - warmup_steps);
  return min_lr + 0.5 * (1.0 + std::cos(M_PI * ratio)) * (max_lr - min_lr);
}

double DeepSpeedSchedule::lr(int64_t iteration) const {
  const bool cosine = kind == Kind::warmup_cosine;
  if (iteration < 0) return cosine ? 0.0 : min_lr;
  const int64_t W = std::max<int64_t>(2, warmup_steps);
  const double i = double(iteration);
  if (iteration < W) {
    const double g = log_warmup ? std::log(i + 1) / std::log(double(W)) : i / double(W);
    return cosine ? max_lr * (warmup_min_ratio + (1 - warmup_min_ratio) * g) : min_lr + (max_lr - min_lr) * g;
  }
  const double span = std::max(1.0, double(total_steps - W));
  switch (kind) {
    case Kind::warmup: return max_lr;
    case Kind::warmup_decay: return min_lr + (max_lr - min_lr) * std::max(0.0, (double(total_steps) - i) / span);
    case Kind::warmup_cosine: break;
  }
  const double p = std::min(1.0, (i - double(W) + 1) / span);
  return max_lr * std::max(0.0, cos_min_ratio + (1 - cos_min_ratio) * (1 + std::cos(M_PI * p)) / 2);
}

}  // namespace sg
