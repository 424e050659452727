#include "optim/loss_scaler.h"

#include <algorithm>
#include <cmath>

#include "kernels/error.h"

namespace sg {

LossScaler::LossScaler(LossScalerOptions options)
    : options_(options),
      scale_(options.static_scale > 0 ? options.static_scale : std::ldexp(1.0, options.initial_scale_power)),
      hysteresis_left_(options.hysteresis) {
  SG_CHECK(options.static_scale >= 0, "fp16.loss_scale must be >= 0 (0: dynamic), got ", options.static_scale);
  SG_CHECK(options.initial_scale_power >= 0 && options.initial_scale_power <= 64,
           "fp16.initial_scale_power must be in [0, 64], got ", options.initial_scale_power);
  SG_CHECK(options.loss_scale_window >= 1, "fp16.loss_scale_window must be >= 1, got ", options.loss_scale_window);
  SG_CHECK(options.hysteresis >= 1, "fp16.hysteresis must be >= 1, got ", options.hysteresis);
  SG_CHECK(options.min_loss_scale > 0, "fp16.min_loss_scale must be > 0, got ", options.min_loss_scale);
}

bool LossScaler::update(bool overflow) {
  if (!dynamic()) {
    ++iteration_;
    return !overflow;
  }
  if (overflow) {
    if (options_.hysteresis == 1 || hysteresis_left_ == 1) {
      SG_CHECK(scale_ > options_.min_loss_scale, "the gradients overflow at the minimum loss scale (",
               options_.min_loss_scale, "): the run has diverged; lower the learning rate, or train in bf16");
      scale_ = std::max(scale_ / 2, options_.min_loss_scale);
    } else {
      --hysteresis_left_;
    }
    last_overflow_ = iteration_;
  } else {
    if (options_.consecutive_hysteresis) hysteresis_left_ = options_.hysteresis;
    if ((iteration_ - last_overflow_) % options_.loss_scale_window == 0) {
      if (!options_.consecutive_hysteresis) hysteresis_left_ = options_.hysteresis;
      scale_ *= 2;
    }
  }
  ++iteration_;
  return !overflow;
}

void LossScaler::restore(const State& state) {
  SG_CHECK(state.scale > 0 && state.iteration >= 0 && state.last_overflow >= -1 && state.hysteresis_left >= 1,
           "a loss-scaler state must have a positive scale and counts (got scale ", state.scale, ")");
  scale_ = state.scale;
  iteration_ = state.iteration;
  last_overflow_ = state.last_overflow;
  hysteresis_left_ = state.hysteresis_left;
}

}  // namespace sg
