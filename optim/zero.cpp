#include "optim/zero.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <unordered_set>

#include "autograd/functions.h"
#include "tensor/ops.h"

namespace sg {
namespace {

// "h.3.mlp.c_fc.weight" -> "h.3"; "wte.weight" -> "wte": a unit is a numbered
// child (a block) or a top-level module.
std::string unit_of(const std::string& name) {
  size_t first = name.find('.');
  if (first == std::string::npos) return name;
  size_t second = name.find('.', first + 1);
  std::string index = name.substr(first + 1, second == std::string::npos ? std::string::npos : second - first - 1);
  bool numbered = !index.empty() && index.find_first_not_of("0123456789") == std::string::npos;
  return numbered ? name.substr(0, second) : name.substr(0, first);
}

}  // namespace

ZeroOptimizer::ZeroOptimizer(const std::vector<ZeroParameter>& params, Communicator& comm, ZeroOptions options)
    : comm_(comm), options_(options) {
  SG_CHECK(options.stage >= 0 && options.stage <= 3, "ZeRO stage ", options.stage, " does not exist: use 0, 1, 2 or 3");
  SG_CHECK(options.dtype == DType::f32 || options.dtype == DType::bf16 || options.dtype == DType::f16,
           "ZeroOptimizer: parameters train in f32, bf16 or f16, not ", dtype_name(options.dtype));
  SG_CHECK(options.reduce_dtype == DType::f32 || options.reduce_dtype == options.dtype,
           "ZeroOptimizer: gradients are reduced in f32 or in the parameters' dtype (", dtype_name(options.dtype), ")");
  if (options.dtype == DType::f16) scaler_ = std::make_unique<LossScaler>(options.loss_scaling);
  // Groups in order of first appearance: one per (unit, decays).
  std::vector<std::string> keys;
  std::map<std::string, std::vector<std::pair<std::string, Variable>>> members;
  std::map<std::string, std::vector<SliceInitializer>> initializers;
  std::map<std::string, bool> decays;
  bool born_partitioned = false;
  for (const ZeroParameter& p : params) {
    SG_CHECK(p.variable.requires_grad(), "ZeroOptimizer: ", p.name, " does not require grad; leave frozen parameters out");
    const bool deferred = p.variable.data().layout().is_released();
    SG_CHECK(!deferred || (options.stage == 3 && p.initialize), "ZeroOptimizer: ", p.name, " was born partitioned ",
             "(nn::DeferredParameters); that needs ZeRO stage 3 and an initializer for its slices");
    SG_CHECK(params.front().variable.data().layout().is_released() == deferred, "ZeroOptimizer: either every parameter ",
             "is born partitioned or none is (", p.name, " differs)");
    born_partitioned = deferred;
    std::string key = unit_of(p.name) + (p.decays ? "" : " (no decay)");
    if (!members.count(key)) keys.push_back(key), decays[key] = p.decays;
    members[key].push_back({p.name, p.variable});
    initializers[key].push_back(p.initialize);
  }
  std::vector<ParamGroup> adam_groups;
  for (const std::string& key : keys) {
    if (born_partitioned) {
      groups_.push_back(ShardGroup::born_partitioned(key, members[key], initializers[key], comm.rank(),
                                                     comm.world_size(), options.align));
    } else {
      groups_.emplace_back(key, members[key], comm.rank(), comm.world_size(), options.align);
    }
    ShardGroup& group = groups_.back();
    // Stage 0 updates the whole (replicated) group; stages 1-2 only this
    // rank's slice of it, a view into the same buffer; stage 3 keeps nothing
    // but that slice.
    if (options.stage == 3 && !group.is_sharded()) group.shard_parameters();
    Tensor target = options.stage == 0   ? group.flat_params()
                    : options.stage == 3 ? group.flat_shard()
                                         : group.my_slice(group.flat_params());
    // Mixed precision: AdamW updates an f32 master copy of that (counted
    // with the optimizer's states, as ZeRO's K = 12 bytes do), and the
    // parameters the model reads become bf16/f16 copies of the masters.
    if (mixed()) {
      target = target.with_category(MemoryCategory::optimizer_state);
      group.cast_parameters(options.dtype);
    }
    updated_.emplace_back(target, /*requires_grad=*/true, key);
    adam_groups.push_back({{updated_.back()}, decays[key] ? options.weight_decay : 0.0});
  }
  adam_ = std::make_unique<AdamW>(adam_groups, options.adam);
  if (options.stage == 3) {
    std::vector<int64_t> elements;
    for (const ShardGroup& group : groups_) elements.push_back(group.padded());
    schedule_ = std::make_unique<GatherSchedule>(elements, options.prefetch_bucket, options.persistence_threshold);
  }
  pending_.assign(groups_.size(), 0);
  grad_shards_.resize(groups_.size());
  // The hook: when the last gradient of a group has been accumulated in the
  // backward pass that reduces, its collective starts (in the fixed order).
  // It also marks the parameter as used in this step.
  for (size_t g = 0; g < groups_.size(); ++g) {
    first_param_.push_back(used_.size());
    for (const GroupParameter& p : groups_[g].params()) {
      Variable variable = p.variable;
      std::shared_ptr<bool> alive = alive_;
      const size_t index = used_.size();
      used_.push_back(0.0f);
      updates_.push_back(0);
      variable.add_post_accumulate_hook([this, g, index, alive](Variable&) {
        if (!*alive) return;
        used_[index] = 1.0f;
        on_gradient_ready(g);
      });
      if (options.stage == 3) {
        variable.state()->before_use = [this, g, alive](VariableState&) {
          if (*alive) ensure_gathered(g);
        };
      }
    }
  }
}

ZeroOptimizer::~ZeroOptimizer() {
  *alive_ = false;
  // A prefetch may still be in flight: let it land before its buffers go.
  try {
    release_all();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "shardgrad: ZeroOptimizer could not finish a gather on destruction: %s\n", error.what());
  }
}

// Stage 3: an op is about to read group g; the schedule says what to
// release, gather and prefetch. Every rank reads the parameters in the same
// order and runs the same schedule, so every rank issues the same
// all-gathers in the same order.
void ZeroOptimizer::ensure_gathered(size_t g) {
  GatherSchedule::Actions actions = schedule_->touch(g);
  for (size_t r : actions.release) groups_[r].release();
  if (actions.gather) {
    if (groups_[g].gather_in_flight()) ++prefetched_gathers_;
    groups_[g].gather(comm_);  // finishes a prefetch, or gathers now
  }
  for (size_t p : actions.prefetch) groups_[p].begin_gather(comm_);
}

std::vector<std::pair<std::string, Tensor>> ZeroOptimizer::full_parameters() {
  NoGradGuard no_grad;
  release_all();
  std::vector<std::pair<std::string, Tensor>> values;
  for (size_t g = 0; g < groups_.size(); ++g) {
    ShardGroup& group = groups_[g];
    if (mixed()) {
      // The f32 masters: whole at stage 0, else every rank's slice gathered.
      Tensor flat = updated_[g].data();
      if (options_.stage > 0) {
        Tensor mine = flat.with_category(MemoryCategory::communication);
        flat = Tensor::empty({group.padded()}, group.options(MemoryCategory::communication));
        comm_.all_gather(flat, mine)->wait();
      }
      for (const GroupParameter& p : group.params()) {
        values.emplace_back(p.name, flat.slice(0, p.offset, p.offset + p.numel).view(p.variable.shape()).clone());
      }
      continue;
    }
    if (group.is_sharded()) group.gather(comm_);
    for (const GroupParameter& p : group.params()) values.emplace_back(p.name, p.variable.data().clone());
    if (group.is_sharded()) group.release();
  }
  return values;
}

void ZeroOptimizer::release_all() {
  for (ShardGroup& group : groups_) {
    if (group.is_sharded() && (group.is_gathered() || group.gather_in_flight())) group.release();
  }
  if (schedule_) schedule_->all_released();
}

int64_t ZeroOptimizer::padded_elements() const {
  int64_t total = 0;
  for (const ShardGroup& group : groups_) total += group.padded();
  return total;
}

void ZeroOptimizer::backward(const Variable& loss, bool last_micro_batch) {
  // Checked before anything starts: reductions may begin before backward does.
  SG_CHECK(loss.defined() && loss.requires_grad(), "ZeroOptimizer::backward: the loss does not require grad (it was ",
           "computed under NoGradGuard, or from no parameter): there is nothing to differentiate");
  SG_CHECK(loss.numel() == 1, "ZeroOptimizer::backward: the loss must be one number, got ", loss.data().str(),
           "; reduce it first (mean or sum)");
  settle_overflow();  // fp16 on a GPU: whether the last step overflowed sets this one's loss scale
  if (options_.stage < 2) {
    // Stages 0-1: gradients accumulate over micro-batches into flat buffers.
    for (ShardGroup& group : groups_) {
      if (!group.flat_grads().defined()) group.attach_flat_grads();
    }
  }
  // Stages 2-3 reduce every micro-batch; stages 0-1 only at the step boundary.
  collecting_ = options_.stage >= 2 || last_micro_batch;
  if (collecting_) {
    // Each group waits for the gradients of the parameters this backward
    // will reach. A parameter it never reaches (an unused layer, a branch
    // this batch did not take) gets no gradient, so its group may be ready
    // before backward starts.
    std::unordered_set<const VariableState*> reached;
    for (const Variable& leaf : loss.reachable_leaves()) reached.insert(leaf.state().get());
    for (size_t g = 0; g < groups_.size(); ++g) {
      pending_[g] = 0;
      for (const GroupParameter& p : groups_[g].params()) pending_[g] += int(reached.count(p.variable.state().get()));
    }
    launched_ = 0;
    if (options_.overlap_comm) launch_ready_in_order();
  }
  if (schedule_) schedule_->next_phase();  // forward is over
  if (scaler_) {
    // fp16: gradients lifted clear of underflow, d(S loss) = S dloss. The
    // seed is S itself in f32, as DeepSpeed scales loss.float(): S starts at
    // 2^16, past f16's largest value, so S times a 16-bit loss would be inf.
    const TensorOptions seed = TensorOptions().dtype(DType::f32).device(loss.device());
    run_backward(loss, Tensor::full(loss.shape(), scaler_->scale(), seed));
  } else {
    run_backward(loss, Tensor());
  }
  if (schedule_) schedule_->next_phase();
  if (collecting_) {
    // What was not launched yet starts now, in the same order (without
    // overlap, that is every reduction). A group none of whose parameters
    // received a gradient still takes part: every rank must issue the same
    // collectives.
    std::fill(pending_.begin(), pending_.end(), 0);
    launch_ready_in_order();
    flush_reductions();
    if (last_micro_batch && comm_.world_size() > 1) {
      // Which parameters got a gradient on any rank in this step: a
      // parameter none did is left alone by step(), as plain AdamW leaves
      // one whose .grad is undefined (a flag per parameter, summed over
      // ranks on the host, in flight with the reductions).
      Tensor used = Tensor::from_vector(used_, {int64_t(used_.size())});
      in_flight_.push_back(comm_.all_reduce(used));
      after_wait_.push_back([this, used] { used_ = used.to_vector<float>(); });
    }
    wait_all();
  }
  collecting_ = false;
}

// loss.backward(seed), or with no seed loss.backward(). If it throws (out of
// memory, say), the reductions already started finish before the error
// goes on, so no collective is left writing into buffers the caller may
// free, and the optimizer is ready for the next backward.
void ZeroOptimizer::run_backward(const Variable& loss, const Tensor& seed) {
  try {
    if (seed.defined()) loss.backward(seed);
    else loss.backward();
  } catch (...) {
    collecting_ = false;
    bucket_.clear(), bucket_elements_ = 0;
    try {
      wait_all();
    } catch (const std::exception& error) {
      std::fprintf(stderr, "shardgrad: after a failed backward, a reduction also failed: %s\n", error.what());
    }
    throw;
  }
}

void ZeroOptimizer::on_gradient_ready(size_t g) {
  if (!collecting_ || !options_.overlap_comm || pending_[g] <= 0 || --pending_[g] != 0) return;
  launch_ready_in_order();
}

// Plain AdamW skips a parameter that got no gradient (its values, moments
// and weight decay untouched) and counts each parameter's own steps for the
// bias correction. ZeRO's AdamW updates whole flat groups, so it is told
// the element ranges of the parameters that got a gradient, in the part of
// the group this rank updates, each with its parameter's count. (Every rank
// counts every parameter, so the counts agree; usually one range covers the
// whole part, padding included.)
void ZeroOptimizer::plan_updates() {
  for (size_t g = 0; g < groups_.size(); ++g) {
    const ShardGroup& group = groups_[g];
    const int64_t first = options_.stage == 0 ? 0 : comm_.rank() * group.shard_size();
    const int64_t last = first + updated_[g].numel();
    std::vector<AdamW::UpdateRange> ranges;
    bool uniform = true;  // every parameter updated, all at the same count
    for (size_t i = 0; i < group.params().size(); ++i) {
      const GroupParameter& p = group.params()[i];
      const size_t k = first_param_[g] + i;
      if (used_[k] == 0.0f) {
        uniform = false;
        continue;
      }
      const int64_t step = ++updates_[k];
      uniform = uniform && step == updates_[first_param_[g]];
      const int64_t begin = std::max(p.offset, first) - first, end = std::min(p.offset + p.numel, last) - first;
      if (begin >= end) continue;
      if (!ranges.empty() && ranges.back().end == begin && ranges.back().step == step) ranges.back().end = end;
      else ranges.push_back({begin, end, step});
    }
    if (uniform && !group.params().empty()) ranges = {{0, updated_[g].numel(), updates_[first_param_[g]]}};
    adam_->set_update_ranges(g, 0, std::move(ranges));
  }
}

// The averaged gradient of group g this rank holds: the whole flat buffer
// (stage 0; a view no backward wrote is zeroed first) or its slice.
// Undefined when the group has none.
Tensor ZeroOptimizer::averaged_grad(size_t g) {
  if (options_.stage > 0) return grad_shards_[g];
  if (groups_[g].flat_grads().defined()) groups_[g].zero_unwritten_grads();
  return groups_[g].flat_grads();
}

std::vector<Tensor> ZeroOptimizer::gradient_tensors() {
  std::vector<Tensor> grads;
  for (size_t g = 0; g < groups_.size(); ++g) {
    Tensor grad = averaged_grad(g);
    if (grad.defined()) grads.push_back(grad);
  }
  return grads;
}

// The global norm of the averaged gradients: each rank sums the squares of
// what it holds (padding is zero), one all-reduce of a single number adds
// them up (stage 0 holds everything). Under fp16 the gradients carry the
// loss scale: an inf/NaN norm is an overflow (every rank sees the same
// norm, so every rank skips the step together), and the scale is divided
// out together with the clipping, in one pass over the gradients.
//
// On a GPU the host reads nothing: the clipping factor is computed on the
// device and AdamW reads it there, so the step's kernels queue on without a
// pause (the norm itself waits in the GradNorm until someone asks). Under
// fp16 an overflow makes that factor NaN, and AdamW skips the step on the
// device; the host learns of it a step late (settle_overflow). DeepSpeed
// reads the norm here instead, which drains the GPU's queue mid-step.
GradNorm ZeroOptimizer::clip_grad_norm(double max_norm) {
  NoGradGuard no_grad;
  settle_overflow();  // the last step's, if nothing since has asked (its loss scale is this step's)
  // One reduction over every group's gradients (two launches on a GPU, not
  // three per group).
  const Device device = groups_.empty() ? Device::cpu() : groups_.front().device();
  const std::vector<Tensor> grads = gradient_tensors();
  Tensor total = grads.empty() ? Tensor::zeros({1}, TensorOptions().device(device))
                               : squared_norm_total(grads).view({1});
  if (options_.stage > 0) {
    total = total.to(DType::f32);
    comm_.all_reduce(total)->wait();
  }
  norm_measured_ = true;
  const double loss_scale = scaler_ ? scaler_->scale() : 1.0;
  if (device.is_cuda() && !(scaler_ && options_.read_overflow_mid_step)) {
    // step() hands the factor to AdamW.
    grad_factor_on_device_ = clip_grad_factor(total, max_norm, loss_scale, /*skip_on_overflow=*/scaler_ != nullptr);
    if (!scaler_) return GradNorm(total, loss_scale);
    squares_on_the_way_ = PendingRead(total);  // read a step later, when it has long landed
    return GradNorm(squares_on_the_way_, loss_scale);
  }
  const double squares = total.item();
  const double norm = std::sqrt(squares) / loss_scale;
  overflow_ = gradients_overflowed(squares, loss_scale);
  // step() hands the factor to AdamW, which multiplies as it reads (an
  // overflow leaves it 1; fp16 then skips the step).
  grad_factor_ = clip_grad_factor(squares, loss_scale, max_norm);
  return GradNorm(norm);
}

void ZeroOptimizer::step(double lr) {
  NoGradGuard no_grad;
  if (scaler_ && !norm_measured_) clip_grad_norm(0.0);  // fp16: unscale, and find overflows
  // fp16 on a GPU: queued as if applied; AdamW skips it on the device if the
  // gradients overflowed, and settle_overflow() later tells the scaler.
  const bool overflow_on_device = squares_on_the_way_.defined();
  const bool apply = scaler_ && !overflow_on_device ? scaler_->update(overflow_) : true;
  // Mixed precision: the model's bf16/f16 parameters this rank updates.
  auto low_precision_params = [this](size_t g) {
    ShardGroup& group = groups_[g];
    return options_.stage == 0   ? group.flat_params()
           : options_.stage == 3 ? group.flat_shard()
                                 : group.my_slice(group.flat_params());
  };
  if (apply) {
    for (size_t g = 0; g < groups_.size(); ++g) {
      Tensor grad = averaged_grad(g);
      updated_[g].set_grad(grad);  // undefined when the group got no gradient: AdamW skips it
      // AdamW writes the 16-bit parameters from the f32 masters in its own pass.
      if (mixed()) adam_->set_low_precision_copy(g, 0, grad.defined() ? low_precision_params(g) : Tensor());
    }
    plan_updates();
    adam_->set_lr(lr);
    if (grad_factor_on_device_.defined()) adam_->set_grad_scale(grad_factor_on_device_);
    else adam_->set_grad_scale(grad_factor_);
    adam_->step();
    if (overflow_on_device) unsettled_ = UnsettledStep{std::move(squares_on_the_way_), used_};
    else ++applied_steps_;
  }
  if (options_.stage == 3) {
    // Gathered copies are stale now (the slices were updated in place); this
    // step's reads become the next step's plan.
    for (size_t g : schedule_->end_step()) groups_[g].release();
  }
  if (!apply) return;  // an fp16 overflow: nothing changed
  if (mixed()) {
    // Groups AdamW skipped (no gradient) still get their 16-bit copy.
    for (size_t g = 0; g < groups_.size(); ++g) {
      if (!updated_[g].grad().defined()) low_precision_params(g).copy_(updated_[g].data());
    }
  }
  if (options_.stage == 0 || options_.stage == 3) return;
  // Every rank updated its slice; gather the slices so every rank holds the
  // whole updated parameters again (one all-gather per bucket, all in flight).
  std::vector<size_t> bucket;
  int64_t elements = 0;
  for (size_t g = 0; g < groups_.size(); ++g) {
    bucket.push_back(g);
    elements += groups_[g].padded();
    if (elements >= options_.allgather_bucket || g + 1 == groups_.size()) {
      gather_updated_slices(bucket);
      bucket.clear();
      elements = 0;
    }
  }
  wait_all();
}

// fp16 on a GPU: whether the last step's gradients overflowed, read now
// that its norm's copy has (usually long) landed. The scaler updates as it
// would have then; a step the device skipped is taken out of the step
// counts that plan_updates() and AdamW advanced when it was queued, so the
// bias corrections and checkpoints agree with a run that read at once.
void ZeroOptimizer::settle_overflow() {
  if (!unsettled_) return;
  UnsettledStep last = std::move(*unsettled_);
  unsettled_.reset();
  const bool overflow = gradients_overflowed(last.squares.item(), scaler_->scale());
  if (scaler_->update(overflow)) {
    ++applied_steps_;
    return;
  }
  for (size_t k = 0; k < updates_.size(); ++k) updates_[k] -= last.used[k] != 0.0f ? 1 : 0;
  adam_->set_steps_taken(adam_->steps_taken() - 1);
}

void ZeroOptimizer::zero_grad() {
  norm_measured_ = overflow_ = false;
  grad_factor_ = 1.0;
  grad_factor_on_device_ = Tensor();
  squares_on_the_way_ = PendingRead();
  std::fill(used_.begin(), used_.end(), 0.0f);
  for (size_t g = 0; g < groups_.size(); ++g) {
    groups_[g].drop_flat_grads();
    grad_shards_[g] = Tensor();
    updated_[g].zero_grad();
  }
}

}  // namespace sg
