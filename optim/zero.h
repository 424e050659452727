// ZeroOptimizer: data-parallel training with ZeRO stages 0-2 (Rajbhandari et
// al., "ZeRO: Memory Optimizations Toward Training Trillion Parameter
// Models", 2020), on top of AdamW.
//
// Parameters are packed into ShardGroups (dist/shard_group.h): one per unit
// (a transformer block, an embedding, the final norm) and weight-decay class.
// Each rank runs its own micro-batches; gradients are averaged over ranks.
//
//   stage 0  gradients all-reduced (one collective per group, issued as soon
//            as backward has produced the group's last gradient, in a fixed
//            order, so it overlaps the rest of backward); every rank
//            updates everything.
//   stage 1  + optimizer states sharded: gradients reduce-scattered into
//            each rank's slice; AdamW updates only that slice (its moments
//            exist only there); the updated slices are all-gathered.
//   stage 2  + gradients sharded: each group's gradients are reduce-scattered
//            (and the full ones freed) as soon as backward produces them,
//            every micro-batch, accumulating into the rank's gradient slice.
//   stage 3  + parameters sharded: each rank keeps only its slice of every
//            group. A parameter is gathered when an op reads it (autograd's
//            before-use hook, Variable::value()), in forward and again in
//            backward; optim/gather_schedule.h decides when each group is
//            released and which groups are prefetched (from the previous
//            step's reads). Gradients flow as in stage 2; after the step
//            every group is released. A model built under
//            nn::DeferredParameters is born partitioned: no rank ever holds
//            all of it, each creates and initializes only its slices.
//
// DeepSpeed's knobs, in elements: reduce_bucket_size packs the reductions of
// consecutive groups into one collective (0: one per group);
// allgather_bucket_size does the same for stages 1-2's all-gathers after the
// step; overlap_comm = false holds every reduction until backward is done;
// stage3_prefetch_bucket_size and stage3_param_persistence_threshold are the
// gather schedule's (optim/gather_schedule.h).
//
// A parameter that no rank gave a gradient in a step is left alone, as
// plain AdamW leaves one whose .grad is undefined, and each parameter counts
// its own steps for AdamW's bias correction, as plain AdamW's do
// (docs/zero.md, "Parameters that get no gradient").
//
// Training loop:
//   for each micro-batch: zero.backward(scale(loss, 1 / accum), micro == accum - 1);
//   zero.clip_grad_norm(1.0); zero.step(lr); zero.zero_grad();
//
// Read next: docs/dist.md (the collectives and their volumes).
#pragma once

#include <cmath>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dist/shard_group.h"
#include "optim/gather_schedule.h"
#include "optim/loss_scaler.h"
#include "optim/optimizers.h"
#include "tensor/pending_read.h"

namespace sg {

// The gradient norm clip_grad_norm measured. On a GPU it is still on the
// device: value() waits for it, which between backward and step() would
// stall the GPU while the host wakes to queue the update, so read it after
// step() has queued the update (train_gpt logs it there). Converts to
// double, waiting then too. Under fp16 its sum of squares is already on
// its way to the host (the copy the overflow is read from): value() reads
// that copy.
class GradNorm {
 public:
  GradNorm(double value) : value_(value) {}  // implicit: a norm the host already knows
  GradNorm(Tensor squares, double loss_scale) : squares_(std::move(squares)), loss_scale_(loss_scale) {}
  GradNorm(PendingRead squares, double loss_scale) : read_(std::move(squares)), loss_scale_(loss_scale) {}

  double value() const {
    if (read_.defined()) value_ = std::sqrt(read_.item()) / loss_scale_, read_ = PendingRead();
    if (squares_.defined()) value_ = std::sqrt(squares_.item()) / loss_scale_, squares_ = Tensor();
    return value_;
  }
  operator double() const { return value(); }  // implicit: `double norm = zero.clip_grad_norm(1.0)` reads it

 private:
  mutable double value_ = 0;
  mutable Tensor squares_;     // the sum of squares on the device, until read
  mutable PendingRead read_;   // or its copy on the way to the host
  double loss_scale_ = 1;
};

struct ZeroParameter {
  std::string name;  // full name, e.g. "h.3.mlp.c_fc.weight": its prefix picks the group
  Variable variable;
  bool decays = false;
  // For a parameter born partitioned (nn::DeferredParameters, stage 3 only):
  // fills any piece of its initial values, so each rank creates only its slice.
  SliceInitializer initialize;
};

struct ZeroOptions {
  int stage = 0;
  AdamW::Options adam = {};
  double weight_decay = 0.0;  // for the parameters marked `decays`
  int64_t align = 16;         // elements each rank's slice is rounded to
  int64_t reduce_bucket = 0;      // elements per gradient collective (0: one group each)
  int64_t allgather_bucket = 0;   // stages 1-2: elements per all-gather after the step (0: one group each)
  bool overlap_comm = true;       // launch reductions during backward, as groups complete
  int64_t prefetch_bucket = 0;    // stage 3: elements prefetched ahead (at least one group)
  int64_t persistence_threshold = 0;  // stage 3: groups with fewer elements stay gathered for the step
  // Mixed precision: the parameters the model computes with are `dtype`;
  // AdamW keeps f32 masters and moments in each rank's shard. Gradients
  // accumulate in f32 and are reduced in `reduce_dtype` (DeepSpeed's
  // communication_data_type): f32 or `dtype`. f16 scales the loss
  // (optim/loss_scaler.h) and skips steps whose gradients overflow.
  DType dtype = DType::f32;
  DType reduce_dtype = DType::f32;
  LossScalerOptions loss_scaling = {};
  // fp16 on a GPU: AdamW skips an overflowed step on the device and the host
  // reads the overflow a step later (the default), or, as DeepSpeed does,
  // the host reads it before queuing the update, which drains the GPU's
  // queue mid-step. The same run either way, to the bit; this is for
  // comparing the two.
  bool read_overflow_mid_step = false;
};

class ZeroOptimizer {
 public:
  ZeroOptimizer(const std::vector<ZeroParameter>& params, Communicator& comm, ZeroOptions options);
  ~ZeroOptimizer();

  // Backward of one micro-batch's (already scaled) loss. On the last
  // micro-batch of a step, gradients are reduced across ranks too.
  void backward(const Variable& loss, bool last_micro_batch);
  // Global L2 norm of the averaged gradients (identical on every rank). The
  // next step() scales them to at most max_norm (max_norm <= 0: measure
  // only), and under fp16 divides out the loss scale: inside AdamW's pass
  // (AdamW::set_grad_scale), so the gradients themselves keep their values
  // and are read once less (124M floats a step for GPT-2). On a GPU the
  // norm stays there (GradNorm): read it after step(), not before.
  GradNorm clip_grad_norm(double max_norm);
  void step(double lr);
  void zero_grad();

  // Every parameter's full values, by name (stage 3 gathers each group in
  // turn; a collective, so every rank must call it). For checking and saving.
  // Under mixed precision: the f32 masters.
  std::vector<std::pair<std::string, Tensor>> full_parameters();

  // Checkpoints (optim/checkpoint.cpp; a collective, every rank calls it):
  // each rank writes its slices of every parameter and AdamW moment to
  // `dir`, rank 0 the index last. Loading reads whatever ranges this rank
  // needs, whatever world size and stage wrote them; returns `training`.
  void save_checkpoint(const std::string& dir, const std::string& training_json = "{}");
  std::string load_checkpoint(const std::string& dir);

  int stage() const { return options_.stage; }
  bool mixed() const { return options_.dtype != DType::f32; }
  // fp16's loss scaler (null otherwise), and the steps actually applied
  // (an fp16 step whose gradients overflowed is skipped). On a GPU the host
  // learns whether the last step overflowed only when it asks: here, or the
  // next backward (settle_overflow), which may then wait for that step's norm.
  const LossScaler* loss_scaler() { settle_overflow(); return scaler_.get(); }
  int64_t applied_steps() { settle_overflow(); return applied_steps_; }
  // Stage 3: gathers served by a prefetch begun earlier (since construction).
  int64_t prefetched_gathers() const { return prefetched_gathers_; }
  const std::vector<ShardGroup>& groups() const { return groups_; }
  // Elements in all groups, padding included (the Psi that collectives move).
  int64_t padded_elements() const;

 private:
  void run_backward(const Variable& loss, const Tensor& seed);
  void on_gradient_ready(size_t group);
  void launch_ready_in_order();
  void plan_updates();
  void settle_overflow();
  void ensure_gathered(size_t group);
  void release_all();
  void launch_reduction(size_t group);
  void flush_reductions();
  void reduce_bucket(const std::vector<size_t>& bucket);
  void gather_updated_slices(const std::vector<size_t>& bucket);
  void wait_all();
  Tensor averaged_grad(size_t group);
  std::vector<Tensor> gradient_tensors();

  Communicator& comm_;
  ZeroOptions options_;
  std::vector<ShardGroup> groups_;
  std::vector<int> pending_;            // per group: gradients still to arrive in this backward (0: ready)
  size_t launched_ = 0;                 // reductions launched in this backward, in the fixed order
  std::vector<size_t> first_param_;     // per group: its first parameter's index in used_
  std::vector<float> used_;             // per parameter: got a gradient this step (here, then on any rank)
  std::vector<int64_t> updates_;        // per parameter: steps that updated it (AdamW's bias correction)
  std::vector<Tensor> grad_shards_;     // stages 1-2: this rank's slice of each group's averaged gradient
  std::vector<WorkHandle> in_flight_;
  std::vector<std::function<void()>> after_wait_;
  bool collecting_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // hooks outlive us on the parameters
  std::vector<Variable> updated_;       // what AdamW updates: whole flat groups (stage 0) or this rank's
                                        // slices; f32 masters under mixed precision
  std::vector<size_t> bucket_;          // groups whose reduction waits for the bucket to fill
  int64_t bucket_elements_ = 0;
  std::unique_ptr<GatherSchedule> schedule_;  // stage 3
  int64_t prefetched_gathers_ = 0;
  std::unique_ptr<AdamW> adam_;
  std::unique_ptr<LossScaler> scaler_;  // f16 only
  bool norm_measured_ = false, overflow_ = false;  // this step's gradients
  double grad_factor_ = 1.0;  // clipping / loss scale, applied by step() inside AdamW
  Tensor grad_factor_on_device_;  // the same, on a GPU (the host never reads it; fp16: NaN skips the step)
  int64_t applied_steps_ = 0;
  // fp16 on a GPU: a step queued before the host knew whether its gradients
  // overflowed (AdamW skips it on the device if they did). The norm's copy
  // and which parameters the step counted, for settle_overflow.
  struct UnsettledStep {
    PendingRead squares;
    std::vector<float> used;
  };
  PendingRead squares_on_the_way_;       // this step's, from clip_grad_norm to step()
  std::optional<UnsettledStep> unsettled_;
};

}  // namespace sg
