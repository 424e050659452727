// How often a training step on the GPU makes the host wait for the device,
// counted by the emulator's runtime (tools/cuda_emu/runtime.h).
//
// Every wait drains the GPU's queue: the host stops queuing kernels until
// the last one has finished, and the GPU idles until the host queues more.
// train_gpt's step needs one, at its end: the loss it prints (clipping's
// factor is computed on the device and AdamW reads it there). fp16 needs a
// second, mid-step: whether the step is applied (an overflow skips it, as
// in DeepSpeed) decides on the host what step() launches. Anything more,
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
#include "tools/cuda_emu/runtime.h"

namespace sg {
namespace {

GptConfig small() {
  GptConfig cfg;
  cfg.vocab_size = 37, cfg.block_size = 16, cfg.n_layer = 2, cfg.n_head = 2, cfg.n_embd = 32, cfg.seed = 5;
  return cfg;
}

class StepOnTheGpu : public ::testing::TestWithParam<std::tuple<int, DType>> {};

TEST_P(StepOnTheGpu, WaitsForTheDeviceOnceAndAllocatesNothingOnceWarm) {
  const auto [stage, dtype] = GetParam();
  const Device device = local_cuda_device();
  std::optional<ParametersOn> placed;
  placed.emplace(device);
  Gpt model(small());
  placed.reset();
  ZeroOptions options{.stage = stage, .adam = {.lr = 1e-3}};
  options.dtype = dtype;
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
    zero.clip_grad_norm(1.0);  // fp16 only, wait 1: the norm (whether the step is applied)
    zero.step(1e-3);
    zero.zero_grad();
    return logged.item();  // the last wait: the loss
  };
  step(), step();  // warm: the allocator's cache now holds every size a step asks for
  const sg_emu::Counters before = sg_emu::counters();
  const double loss = step();
  const sg_emu::Counters after = sg_emu::counters();
  EXPECT_TRUE(std::isfinite(loss));
  EXPECT_EQ(after.host_waits - before.host_waits, dtype == DType::f16 ? 2 : 1)
      << "the host waited for the device this often in one step";
  EXPECT_EQ(after.device_allocations - before.device_allocations, 0) << "cudaMalloc calls in a warm step";
}

INSTANTIATE_TEST_SUITE_P(StagesAndDtypes, StepOnTheGpu,
                         ::testing::Combine(::testing::Values(0, 1, 2, 3),
                                            ::testing::Values(DType::f32, DType::bf16, DType::f16)),
                         [](const auto& info) {
                           return "stage" + std::to_string(std::get<0>(info.param)) + "_" +
                                  std::string(dtype_name(std::get<1>(info.param)));
                         });

}  // namespace
}  // namespace sg
