// Optimizers over a list of parameters (never a Module: what to optimize is
// the caller's choice, and ZeRO will hand in shards). Each parameter group
// carries its own weight decay, so biases, norms and embeddings can skip it.
//
//   AdamW opt({{decayed, 0.1}, {others, 0.0}}, {.lr = 1e-3});
//   loss.backward(); clip_grad_norm(params, 1.0); opt.step(); opt.zero_grad();
//
// State (AdamW's m and v, SGD's momentum) is created on the first step with
// each parameter's layout (a shard's state is a shard) and counted as
// MemoryCategory::optimizer_state.
//
// Read next: optim/schedule.h.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "autograd/variable.h"

namespace sg {

struct ParamGroup {
  std::vector<Variable> params;
  double weight_decay = 0.0;
};

class Optimizer {
 public:
  explicit Optimizer(std::vector<ParamGroup> groups);
  virtual ~Optimizer() = default;
  virtual void step() = 0;  // parameters without a gradient are left alone
  void zero_grad();         // drops every gradient
  void set_lr(double lr);  // a finite number >= 0, or an error
  double lr() const { return lr_; }
  int64_t steps_taken() const { return steps_; }
  void set_steps_taken(int64_t steps) { steps_ = steps; }  // restoring a checkpoint
  const std::vector<ParamGroup>& groups() const { return groups_; }

 protected:
  std::vector<ParamGroup> groups_;
  double lr_ = 1e-3;
  int64_t steps_ = 0;
};

// AdamW with decoupled weight decay (Loshchilov & Hutter), PyTorch's update;
// the arithmetic is kernels/adamw_math.h. Like PyTorch's (state['step']),
// each parameter counts its own steps for the bias correction: one first
// updated at the optimizer's 5th step is corrected as at its 1st.
class AdamW : public Optimizer {
 public:
  // For set_update_ranges: elements [begin, end), bias-corrected as at
  // their `step`-th update.
  struct UpdateRange {
    int64_t begin = 0, end = 0;
    int64_t step = 1;
  };
  struct Options {
    double lr = 1e-3;
    double beta1 = 0.9, beta2 = 0.999;
    double eps = 1e-8;
  };
  AdamW(std::vector<ParamGroup> groups, Options options);
  void step() override;
  // For checkpoints: the moments of parameter i of group g, created (zeros,
  // as the first step would) where it has none yet.
  Tensor& exp_avg(size_t g, size_t i);
  Tensor& exp_avg_sq(size_t g, size_t i);
  // The next step also writes parameter i of group g, rounded, into `copy`
  // (bf16/f16, as many elements) in the same pass; an undefined copy stops it.
  void set_low_precision_copy(size_t g, size_t i, Tensor copy);
  // Steps multiply each gradient by `scale` as they read it (1 by default):
  // clipping and fp16's unscaling, done in the update's own pass instead of
  // one pass over the gradients of their own. The gradients are not changed.
  void set_grad_scale(double scale) { grad_scale_ = scale, grad_scale_tensor_ = Tensor(); }
  // The same, the scale a 0-dim f32 on the parameters' device, read there by
  // the update (clip_grad_factor's): the host never waits for it.
  void set_grad_scale(Tensor scale);
  // How many steps have updated parameter i of group g (its own count).
  int64_t updates(size_t g, size_t i) const;
  // Steps update only these element ranges of parameter i of group g (a 1-D
  // parameter), each with its own step count; the elements outside keep
  // their values, their moments and their 16-bit copy, as a parameter
  // without a gradient does. ZeRO's flat groups hold many parameters, which
  // may differ in both (optim/zero.cpp, which sets them before every step).
  void set_update_ranges(size_t g, size_t i, std::vector<UpdateRange> ranges);

 private:
  Options options_;
  double grad_scale_ = 1.0;
  Tensor grad_scale_tensor_;  // when defined: the scale, on the device
  // Per group, per parameter: the ranges set_update_ranges chose (none
  // set: the whole parameter).
  std::vector<std::vector<std::optional<std::vector<UpdateRange>>>> ranges_;
  std::vector<std::vector<int64_t>> updates_;  // per group, per parameter: steps that updated it
  std::vector<std::vector<Tensor>> m_, v_;  // per group, per parameter
  std::vector<std::vector<Tensor>> copies_;  // per group, per parameter; undefined: none
};

// SGD with momentum, PyTorch's form: g += wd * p; buf = momentum * buf + g
// (buf = g on the first step); p -= lr * buf.
class Sgd : public Optimizer {
 public:
  struct Options {
    double lr = 1e-2;
    double momentum = 0.0;
  };
  Sgd(std::vector<ParamGroup> groups, Options options);
  void step() override;

 private:
  Options options_;
  std::vector<std::vector<Tensor>> momentum_;
};

// Scales all gradients together so their global L2 norm is at most max_norm
// (PyTorch's clip_grad_norm_). Returns the norm before clipping.
double clip_grad_norm(const std::vector<Variable>& params, double max_norm);

// The global L2 norm of the gradients (those present).
double grad_norm(const std::vector<Variable>& params);

}  // namespace sg
