// How often a training step on the GPU makes the host wait for the device,
// counted by the emulator's runtime (tools/cuda_emu/runtime.h).
//
// Every wait drains the GPU's queue: the host stops queuing kernels until
// the last one has finished, and the GPU idles until the host queues more.
// train_gpt's step needs one, at its end: the loss it prints (clipping's
// factor is computed on the device and AdamW reads it there). fp16 too: an
// overflow makes that factor NaN and AdamW skips the step on the device,
// and the host reads whether it did a step later, from a copy queued
// mid-step that the loss's wait has already waited past. Anything more,
// an .item() deep inside an op, say, costs a pipeline drain per call and
// shows up here. Once the caching allocator is warm a step also allocates no
// device memory (cudaMalloc synchronizes too, and is slow). CTest also runs
// it on 2 ranks with a GPU each (NCCL), where the count is the same.
#include <gtest/gtest.h>

#include <cmath>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "dist/world.h"
#include "examples/zero_parameters.h"
#include "nn/gpt.h"
#include "optim/zero.h"
#include "tensor/ops.h"
#include "tensor/pending_read.h"
#include "tools/cuda_emu/runtime.h"

namespace sg {
namespace {

GptConfig small() {
  GptConfig cfg;
  cfg.vocab_size = 37, cfg.block_size = 16, cfg.n_layer = 2, cfg.n_head = 2, cfg.n_embd = 32, cfg.seed = 5;
  return cfg;
}

// Waits for the device, and device allocations, in the third step of train_gpt's loop.
sg_emu::Counters count_a_warm_step(const ZeroOptions& options) {
  const Device device = local_cuda_device();
  std::optional<ParametersOn> placed;
  placed.emplace(device);
  Gpt model(small());
  placed.reset();
  ZeroOptimizer zero(zero_parameters(model, small().seed), world(), options);

  // The loader's batches: pinned host memory, uploaded without waiting.
  std::vector<int32_t> ids;
  for (int i = 0; i < 2 * 17; ++i) ids.push_back(int32_t((i * 5 + i / 3) % 37));
  const Tensor tokens = Tensor::from_vector(ids, {2, 17});
  Tensor x = Tensor::empty({2, 16}, TensorOptions().dtype(DType::i32).pinned(true));
  Tensor y = Tensor::empty({2, 16}, TensorOptions().dtype(DType::i32).pinned(true));
  x.copy_(tokens.slice(1, 0, 16)), y.copy_(tokens.slice(1, 1, 17));

  // train_gpt's step, one micro-batch.
  auto step = [&] {
    Variable loss = model.loss(x.to(device, /*non_blocking=*/true), y.to(device, /*non_blocking=*/true));
    zero.backward(loss, /*last_micro_batch=*/true);
    const Tensor logged = loss.data().to(DType::f32);
    zero.clip_grad_norm(1.0);
    zero.step(1e-3);
    zero.zero_grad();
    return logged.item();  // the last wait: the loss
  };
  step(), step();  // warm: the allocator's cache now holds every size a step asks for
  const sg_emu::Counters before = sg_emu::counters();
  const double loss = step();
  const sg_emu::Counters after = sg_emu::counters();
  EXPECT_TRUE(std::isfinite(loss));
  return {.host_waits = after.host_waits - before.host_waits,
          .device_allocations = after.device_allocations - before.device_allocations};
}

class StepOnTheGpu : public ::testing::TestWithParam<std::tuple<int, DType>> {};

TEST_P(StepOnTheGpu, WaitsForTheDeviceOnceAndAllocatesNothingOnceWarm) {
  const auto [stage, dtype] = GetParam();
  ZeroOptions options{.stage = stage, .adam = {.lr = 1e-3}};
  options.dtype = dtype;
  const sg_emu::Counters step = count_a_warm_step(options);
  EXPECT_EQ(step.host_waits, 1) << "the host waited for the device this often in one step";
  EXPECT_EQ(step.device_allocations, 0) << "cudaMalloc calls in a warm step";
}

// What fp16 saves by reading the overflow a step late: read before the
// update is queued, as DeepSpeed does, it is a second wait, mid-step.
TEST(StepOnTheGpu, Fp16ReadingItsOverflowMidStepWaitsTwice) {
  ZeroOptions options{.stage = 2, .adam = {.lr = 1e-3}, .dtype = DType::f16, .read_overflow_mid_step = true};
  EXPECT_EQ(count_a_warm_step(options).host_waits, 2);
}

INSTANTIATE_TEST_SUITE_P(StagesAndDtypes, StepOnTheGpu,
                         ::testing::Combine(::testing::Values(0, 1, 2, 3),
                                            ::testing::Values(DType::f32, DType::bf16, DType::f16)),
                         [](const auto& info) {
                           return "stage" + std::to_string(std::get<0>(info.param)) + "_" +
                                  std::string(dtype_name(std::get<1>(info.param)));
                         });

// A PendingRead waits for its own copy only: read before anything else
// made the host wait, it is one wait; read after another wait (a step's
// loss) has drained the queue past it, none, however much was queued since.
TEST(PendingRead, WaitsOnlyWhenNothingHasWaitedPastItsCopy) {
  const Tensor x = Tensor::full({4}, 3.0, TensorOptions().device(local_cuda_device()));
  sg_emu::Counters before = sg_emu::counters();
  PendingRead early(sum(x));
  Tensor more = mul(x, x);
  EXPECT_EQ(early.item(), 12.0);
  EXPECT_EQ(sg_emu::counters().host_waits - before.host_waits, 1);

  PendingRead late(sum(x));
  EXPECT_EQ(sum(more).item(), 36.0);  // a wait that drains the queue, the copy with it
  more = mul(more, x);                // queued since
  before = sg_emu::counters();
  EXPECT_EQ(late.item(), 12.0);
  EXPECT_EQ(sg_emu::counters().host_waits - before.host_waits, 0) << "the copy had landed already";
}

}  // namespace
}  // namespace sg
