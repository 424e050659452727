// fp16 training's loss scale, with DeepSpeed's semantics
// (deepspeed/runtime/fp16/loss_scaler.py, DynamicLossScaler.update_scale).
//
// fp16 has 5 exponent bits: gradients below 2^-24 flush to zero. Multiplying
// the loss by a large scale S lifts every gradient by S (backward is
// linear), and the optimizer divides it out again. Too large an S overflows
// to inf/NaN somewhere; then the step is skipped and S lowered:
//
//   overflow:  if hysteresis == 1 (or is exhausted): S = max(S / 2, min_loss_scale)
//              else: one less overflow tolerated (hysteresis - 1)
//   no overflow, and loss_scale_window steps since the last overflow: S = 2 S
//              (and the tolerance is restored)
//
// starting from S = 2^initial_scale_power. A fixed scale (DeepSpeed's
// loss_scale > 0) never changes; an overflow still skips the step (DeepSpeed
// checks overflow only when dynamic; shardgrad never writes inf into weights).
// An overflow at min_loss_scale is an error: the run has diverged.
//
// bf16 has fp32's exponent range and needs no scaling.
#pragma once

#include <cstdint>

namespace sg {

struct LossScalerOptions {
  double static_scale = 0;          // DeepSpeed's loss_scale: 0 = dynamic
  int initial_scale_power = 16;     // dynamic: the first scale is 2^power
  int64_t loss_scale_window = 1000; // overflow-free steps before the scale doubles
  int hysteresis = 2;               // overflows absorbed before the scale halves
  double min_loss_scale = 1;
  bool consecutive_hysteresis = false;  // restore the tolerance after every good step
};

class LossScaler {
 public:
  explicit LossScaler(LossScalerOptions options = {});

  double scale() const { return scale_; }
  bool dynamic() const { return options_.static_scale <= 0; }
  // After a step's gradients are reduced: `overflow` when any is inf or NaN
  // (on any rank). Returns whether the step is to be applied (no overflow),
  // and moves the scale.
  bool update(bool overflow);

  // Everything a checkpoint must keep to continue exactly.
  struct State {
    double scale = 1;
    int64_t iteration = 0, last_overflow = -1;
    int hysteresis_left = 1;
  };
  State state() const { return {scale_, iteration_, last_overflow_, hysteresis_left_}; }
  void restore(const State& state);

 private:
  LossScalerOptions options_;
  double scale_;
  int64_t iteration_ = 0, last_overflow_ = -1;
  int hysteresis_left_;
};

}  // namespace sg
