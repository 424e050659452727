#include "optim/optimizers.h"

#include <cmath>
#include <map>

#include "tensor/ops.h"

namespace sg {
namespace {

// Zero-filled state shaped like the parameter (a shard for a shard).
Tensor new_state(const Tensor& param) {
  Tensor state = Tensor::empty_with(param.layout(), TensorOptions()
                                                        .dtype(param.dtype())
                                                        .device(param.device())
                                                        .category(MemoryCategory::optimizer_state));
  state.fill_(0.0);
  return state;
}

// PyTorch's checks (torch/optim/adamw.py), with what to do: a beta of 1 or
// more makes the moments grow without bound, a negative one flips signs, and
// a NaN anywhere turns every parameter into NaN at the first step.
void check_learning_rate(const char* who, double lr) {
  SG_CHECK(std::isfinite(lr) && lr >= 0.0, who, ": the learning rate must be a finite number >= 0, got ", lr);
}

void check_adamw_options(const AdamW::Options& options) {
  check_learning_rate("AdamW", options.lr);
  SG_CHECK(options.beta1 >= 0.0 && options.beta1 < 1.0, "AdamW: beta1 must be in [0, 1), got ", options.beta1,
           " (PyTorch's default is 0.9)");
  SG_CHECK(options.beta2 >= 0.0 && options.beta2 < 1.0, "AdamW: beta2 must be in [0, 1), got ", options.beta2,
           " (PyTorch's default is 0.999; GPT training often uses 0.95-0.99)");
  SG_CHECK(std::isfinite(options.eps) && options.eps >= 0.0, "AdamW: eps must be a finite number >= 0, got ",
           options.eps, " (PyTorch's default is 1e-8)");
}

}  // namespace

Optimizer::Optimizer(std::vector<ParamGroup> groups) : groups_(std::move(groups)) {
  for (const ParamGroup& group : groups_) {
    for (const Variable& p : group.params) {
      SG_CHECK(p.defined() && p.requires_grad(), "optimizer: every parameter must be a Variable that requires grad",
               p.defined() ? "; got " + p.data().str() + " " + p.name() : "");
    }
    SG_CHECK(std::isfinite(group.weight_decay) && group.weight_decay >= 0.0,
             "optimizer: a group's weight decay must be a finite number >= 0, got ", group.weight_decay);
  }
}

void Optimizer::set_lr(double lr) {
  check_learning_rate("optimizer", lr);
  lr_ = lr;
}

void Optimizer::zero_grad() {
  for (ParamGroup& group : groups_)
    for (Variable& p : group.params) p.zero_grad();
}

AdamW::AdamW(std::vector<ParamGroup> groups, Options options) : Optimizer(std::move(groups)), options_(options) {
  check_adamw_options(options);
  lr_ = options.lr;
  for (const ParamGroup& group : groups_) {
    m_.emplace_back(group.params.size());
    v_.emplace_back(group.params.size());
    copies_.emplace_back(group.params.size());
    ranges_.emplace_back(group.params.size());
    updates_.emplace_back(group.params.size(), 0);
  }
}

int64_t AdamW::updates(size_t g, size_t i) const {
  SG_CHECK(g < updates_.size() && i < updates_[g].size(), "AdamW: no parameter ", i, " in group ", g);
  return updates_[g][i];
}

void AdamW::set_update_ranges(size_t g, size_t i, std::vector<UpdateRange> ranges) {
  SG_CHECK(g < ranges_.size() && i < ranges_[g].size(), "AdamW: no parameter ", i, " in group ", g);
  const Variable& p = groups_[g].params[i];
  SG_CHECK(p.data().dim() == 1, "AdamW: update ranges need a 1-D parameter; ", p.name(), " is ", p.data().str());
  for (const UpdateRange& r : ranges) {
    SG_CHECK(0 <= r.begin && r.begin <= r.end && r.end <= p.numel(), "AdamW: update range [", r.begin, ", ", r.end,
             ") is outside ", p.name(), "'s ", p.numel(), " elements");
    SG_CHECK(r.step >= 1, "AdamW: an update range's step counts from 1, got ", r.step);
  }
  ranges_[g][i] = std::move(ranges);
}

void AdamW::set_grad_scale(Tensor scale) {
  SG_CHECK(scale.numel() == 1 && scale.dtype() == DType::f32 && scale.is_contiguous(),
           "AdamW::set_grad_scale: expected one f32 value (a 0-dim tensor), got ", scale.str());
  grad_scale_tensor_ = std::move(scale);
}

void AdamW::step() {
  NoGradGuard no_grad;
  ++steps_;
  for (size_t g = 0; g < groups_.size(); ++g) {
    AdamWParams hp;
    hp.lr = float(lr_);
    hp.beta1 = float(options_.beta1), hp.beta2 = float(options_.beta2), hp.eps = float(options_.eps);
    hp.weight_decay = float(groups_[g].weight_decay);
    hp.grad_scale = float(grad_scale_);
    hp.grad_scale_at = grad_scale_tensor_.defined() ? grad_scale_tensor_.data<float>() : nullptr;
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      Variable& p = groups_[g].params[i];
      if (!p.grad().defined()) continue;
      if (!m_[g][i].defined()) m_[g][i] = new_state(p.data()), v_[g][i] = new_state(p.data());
      Tensor data = p.data();  // a handle: the update writes the parameter's storage
      SG_CHECK(!grad_scale_tensor_.defined() || grad_scale_tensor_.device() == data.device(), "AdamW: the gradient ",
               "scale is on ", grad_scale_tensor_.device().str(), " but ", p.name(), " on ", data.device().str());
      Tensor& copy = copies_[g][i];
      ++updates_[g][i];
      if (!ranges_[g][i]) {
        hp.step = updates_[g][i];
        adamw_update_(data, m_[g][i], v_[g][i], p.grad(), hp, copy.defined() ? &copy : nullptr);
        continue;
      }
      for (const UpdateRange& r : *ranges_[g][i]) {  // views: each update writes its part in place
        if (r.begin == r.end) continue;
        hp.step = r.step;
        Tensor part = data.slice(0, r.begin, r.end), m = m_[g][i].slice(0, r.begin, r.end);
        Tensor v = v_[g][i].slice(0, r.begin, r.end);
        Tensor part_copy = copy.defined() ? copy.slice(0, r.begin, r.end) : Tensor();
        adamw_update_(part, m, v, p.grad().slice(0, r.begin, r.end), hp, copy.defined() ? &part_copy : nullptr);
      }
    }
  }
}

Tensor& AdamW::exp_avg(size_t g, size_t i) {
  if (!m_[g][i].defined()) m_[g][i] = new_state(groups_[g].params[i].data()), v_[g][i] = new_state(groups_[g].params[i].data());
  return m_[g][i];
}

void AdamW::set_low_precision_copy(size_t g, size_t i, Tensor copy) {
  SG_CHECK(g < copies_.size() && i < copies_[g].size(), "AdamW: no parameter ", i, " in group ", g);
  copies_[g][i] = std::move(copy);
}

Tensor& AdamW::exp_avg_sq(size_t g, size_t i) {
  exp_avg(g, i);
  return v_[g][i];
}

Sgd::Sgd(std::vector<ParamGroup> groups, Options options) : Optimizer(std::move(groups)), options_(options) {
  check_learning_rate("SGD", options.lr);
  SG_CHECK(options.momentum >= 0.0 && options.momentum < 1.0, "SGD: momentum must be in [0, 1), got ",
           options.momentum);
  lr_ = options.lr;
  for (const ParamGroup& group : groups_) momentum_.emplace_back(group.params.size());
}

void Sgd::step() {
  NoGradGuard no_grad;
  ++steps_;
  for (size_t g = 0; g < groups_.size(); ++g) {
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      Variable& p = groups_[g].params[i];
      if (!p.grad().defined()) continue;
      Tensor data = p.data();
      Tensor direction = p.grad().clone();
      if (groups_[g].weight_decay != 0.0) axpy_(direction, groups_[g].weight_decay, data);
      if (options_.momentum != 0.0) {
        Tensor& buffer = momentum_[g][i];
        if (!buffer.defined()) {
          buffer = direction.with_category(MemoryCategory::optimizer_state);
        } else {
          scale_(buffer, options_.momentum);
          axpy_(buffer, 1.0, direction);
        }
        direction = buffer;
      }
      axpy_(data, -lr_, direction);
    }
  }
}

double grad_norm(const std::vector<Variable>& params) {
  double total = 0.0;
  std::map<int, Tensor> on_gpu;  // each GPU's partial sum, read once at the end (one sync, not one per tensor)
  for (const Variable& p : params) {
    if (!p.grad().defined()) continue;
    Tensor squares = squared_norm(p.grad());
    if (squares.device().is_cpu()) {
      total += squares.item();
      continue;
    }
    squares = squares.to(DType::f32).view({1});
    Tensor& sum = on_gpu[squares.device().index];
    sum = sum.defined() ? add(sum, squares) : squares;
  }
  for (const auto& [index, sum] : on_gpu) total += sum.item();
  return std::sqrt(total);
}

double clip_grad_norm(const std::vector<Variable>& params, double max_norm) {
  SG_CHECK(max_norm > 0.0, "clip_grad_norm: max_norm must be positive, got ", max_norm);
  double norm = grad_norm(params);
  double coefficient = max_norm / (norm + 1e-6);
  if (coefficient < 1.0) {
    for (const Variable& p : params) {
      if (!p.grad().defined()) continue;
      Tensor grad = p.grad();
      scale_(grad, coefficient);
    }
  }
  return norm;
}

}  // namespace sg
