// Mixed precision through ZeroOptimizer, on the CPU (its kernels compute in
// f32 and store bf16/f16, so the logic runs here as it will on a GPU):
// bf16 training follows the f32 run closely at every stage and world size;
// the bytes follow ZeRO's mixed-precision formulas (2 bytes of parameter,
// 12 of f32 master and moments); fp16 skips the steps whose gradients
// overflow and lowers the loss scale.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "dist/backends.h"
#include "tests/dist/zero_test_util.h"
#include "tools/zero_memory_model.h"

namespace sg {
namespace {

using namespace zero_test;

class ZeroBf16 : public ::testing::TestWithParam<int> {};

// bf16 parameters and activations, f32 masters, gradients reduced in bf16:
// every step's loss within 1% of the f32 run's (bf16 keeps 8 bits of
// mantissa: 0.4% per rounding), and the loss falls as far.
TEST_P(ZeroBf16, FollowsTheF32Run) {
  const int stage = GetParam();
  const ZeroOptions knobs{.dtype = DType::bf16, .reduce_dtype = DType::bf16};
  ZeroTrainer trainer(stage, stage == 3, knobs);
  std::vector<float> losses = trainer.train(0, kSteps);
  const std::vector<float>& expected = reference().losses;
  for (int64_t step = 0; step < kSteps; ++step) {
    EXPECT_NEAR(losses[size_t(step)], expected[size_t(step)], 0.01 * expected[size_t(step)]) << "step " << step;
  }
  EXPECT_LT(losses.back(), losses.front() - 0.1);
  for (const ShardGroup& group : trainer.zero.groups()) EXPECT_EQ(group.dtype(), DType::bf16) << group.name();
  // The masters are f32, and close to the f32 run's parameters.
  std::vector<std::vector<float>> params = trainer.parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    for (size_t j = 0; j < params[i].size(); ++j) {
      ASSERT_NEAR(params[i][j], reference().params[i][j], 2 * kLr * kSteps) << "parameter " << i << "[" << j << "]";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Stages, ZeroBf16, ::testing::Values(0, 1, 2, 3),
                         [](const auto& info) { return "stage" + std::to_string(info.param); });

// A world of one moves no byte, so it rounds no gradient to 16 bits for a
// collective: with reduce_dtype bf16 the run is exactly the f32-reduce run.
// (Each rank runs its own world of one, so this runs under any launcher.)
TEST(ZeroBf16, AWorldOfOneKeepsItsGradientsInF32) {
  Communicator solo(0, 1, make_local_backend(), nullptr);
  for (int stage : {0, 1, 2, 3}) {
    ZeroTrainer f32_reduce(stage, false, {.dtype = DType::bf16, .reduce_dtype = DType::f32}, Device::cpu(), &solo);
    ZeroTrainer bf16_reduce(stage, false, {.dtype = DType::bf16, .reduce_dtype = DType::bf16}, Device::cpu(), &solo);
    EXPECT_EQ(bf16_reduce.train(0, 3), f32_reduce.train(0, 3)) << "stage " << stage;
  }
}

// The same on the GPU: bf16 kernels (cuBLASLt GEMMs, GEMM-form attention,
// the fused epilogues) against the CPU's f32 run, at 1% per step.
class ZeroBf16OnCuda : public ::testing::TestWithParam<int> {};

TEST_P(ZeroBf16OnCuda, FollowsTheCpuF32Run) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU visible; scripts/gpu_check.sh runs this on one";
  const ZeroOptions knobs{.dtype = DType::bf16, .reduce_dtype = DType::bf16};
  ZeroTrainer trainer(GetParam(), false, knobs, local_cuda_device());
  std::vector<float> losses = trainer.train(0, kSteps);
  const std::vector<float>& expected = reference().losses;
  for (int64_t step = 0; step < kSteps; ++step) {
    EXPECT_NEAR(losses[size_t(step)], expected[size_t(step)], 0.01 * expected[size_t(step)]) << "step " << step;
  }
  EXPECT_LT(losses.back(), losses.front() - 0.1);
}

INSTANTIATE_TEST_SUITE_P(Stages, ZeroBf16OnCuda, ::testing::Values(0, 3),
                         [](const auto& info) { return "stage" + std::to_string(info.param); });

// ZeRO's mixed-precision bytes per rank (P padded elements, N ranks):
// parameters 2P (stage 3: 2P/N), f32 masters and moments 12P (stages 1-3:
// 12P/N); gradients accumulate in f32, as in f32 training.
TEST(ZeroBf16Memory, ParametersTwoBytesMastersAndMomentsTwelve) {
  const int64_t N = world().world_size();
  for (int stage : {0, 1, 2, 3}) {
    const MemoryStats before = memory_stats(Device::cpu());
    auto live = [&](MemoryCategory c) { return memory_stats(Device::cpu())[c].live - before[c].live; };
    {
      OneStepSetup setup(stage, {.dtype = DType::bf16, .reduce_dtype = DType::bf16});
      const int64_t P = setup.zero.padded_elements();
      setup.zero.backward(setup.model.loss(setup.x, setup.y), true);
      setup.zero.step(kLr);
      EXPECT_EQ(live(MemoryCategory::parameter), stage == 3 ? 2 * P / N : 2 * P) << "stage " << stage;
      EXPECT_EQ(live(MemoryCategory::optimizer_state), stage == 0 ? 12 * P : 12 * P / N) << "stage " << stage;
      const int64_t gradients[] = {4 * P, 4 * P + 4 * P / N, 4 * P / N, 4 * P / N};
      EXPECT_EQ(live(MemoryCategory::gradient), gradients[stage]) << "stage " << stage;
      ZeroMemoryEstimate e = estimate_zero_memory(config(), int(N), stage, DType::bf16);
      EXPECT_EQ(e.parameters, live(MemoryCategory::parameter)) << "stage " << stage;
      EXPECT_EQ(e.optimizer_states, live(MemoryCategory::optimizer_state)) << "stage " << stage;
      EXPECT_EQ(e.gradients, live(MemoryCategory::gradient)) << "stage " << stage;
    }
  }
}

// fp16: a loss scale of 2^40 overflows f16 gradients (largest finite value
// 65504): the step is skipped (nothing changes), and the scale halves at
// each overflow until the gradients fit; then training proceeds.
TEST(ZeroFp16, SkipsOverflowingStepsAndLowersTheScale) {
  const ZeroOptions knobs{.dtype = DType::f16,
                          .reduce_dtype = DType::f32,
                          .loss_scaling = {.initial_scale_power = 40, .loss_scale_window = 1000, .hysteresis = 1}};
  ZeroTrainer trainer(2, false, knobs);
  const std::vector<std::vector<float>> initial = trainer.parameters();
  trainer.train(0, 1);
  EXPECT_EQ(trainer.zero.applied_steps(), 0);
  EXPECT_EQ(trainer.zero.loss_scaler()->scale(), std::ldexp(1.0, 39));
  EXPECT_EQ(trainer.parameters(), initial) << "a skipped step changes nothing";
  std::vector<float> losses = trainer.train(1, 40);
  const int64_t skipped = 40 - trainer.zero.applied_steps();
  EXPECT_GT(skipped, 10) << "2^40 must come down below 2^16 or so first";
  EXPECT_LT(skipped, 40);
  EXPECT_LT(trainer.zero.loss_scaler()->scale(), std::ldexp(1.0, 30));
  EXPECT_LT(losses.back(), losses.front() - 0.1) << "training proceeds once the gradients fit";
}

// DeepSpeed's default scale, 2^16, is itself past f16's largest value: the
// scaled loss must be f32 (cross_entropy's loss is), or the first steps
// overflow for no real reason. Here the very first step applies.
TEST(ZeroFp16, DefaultScaleAppliesTheFirstStep) {
  const ZeroOptions knobs{.dtype = DType::f16, .reduce_dtype = DType::f32};
  ZeroTrainer trainer(2, false, knobs);
  EXPECT_EQ(trainer.zero.loss_scaler()->scale(), 65536.0);
  trainer.train(0, 1);
  EXPECT_EQ(trainer.zero.applied_steps(), 1);
  EXPECT_EQ(trainer.zero.loss_scaler()->scale(), 65536.0);
}

// fp16 on the GPU: the overflow is found on the device and AdamW skips the
// step there; the host reads whether it did a step late (optim/zero.cpp,
// settle_overflow). The run is the one where the host reads each step's
// overflow before queuing its update, as DeepSpeed does, to the bit: the
// same steps skipped, the scale on the same path, the same parameters
// (were a skipped step still counted, every later bias correction would
// differ). (Against the CPU's fp16 run instead, the GPU's kernels can
// overflow at a scale where the CPU's just do not: a different run.) At
// stage 2, whose ranks also gather their slices after a skipped step
// (unchanged ones).
TEST(ZeroFp16OnCuda, SkipsOnTheDeviceAsTheHostWould) {
  constexpr int kStage = 2;
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU visible; scripts/gpu_check.sh runs this on one";
  ZeroOptions knobs{.dtype = DType::f16,
                    .reduce_dtype = DType::f32,
                    .loss_scaling = {.initial_scale_power = 23, .loss_scale_window = 3, .hysteresis = 1}};
  ZeroTrainer deferred(kStage, false, knobs, local_cuda_device());
  knobs.read_overflow_mid_step = true;
  ZeroTrainer at_once(kStage, false, knobs, local_cuda_device());
  const std::vector<std::vector<float>> initial = deferred.parameters();
  deferred.train(0, 1), at_once.train(0, 1);
  EXPECT_EQ(deferred.parameters(), initial) << "a skipped step changes nothing";
  for (int64_t step = 1; step < kSteps; ++step) {
    EXPECT_EQ(deferred.train(step, step + 1), at_once.train(step, step + 1)) << "step " << step;
    EXPECT_EQ(deferred.zero.loss_scaler()->scale(), at_once.zero.loss_scaler()->scale()) << "step " << step;
    EXPECT_EQ(deferred.zero.applied_steps(), at_once.zero.applied_steps()) << "step " << step;
  }
  EXPECT_EQ(deferred.parameters(), at_once.parameters());
  const int64_t skipped = kSteps - deferred.zero.applied_steps();
  EXPECT_GE(skipped, 2) << "the test needs overflows";
  EXPECT_LE(skipped, kSteps - 3) << "and steps applied after them";
  // The norms each reports for a few more steps (deferred: read from the
  // copy the overflow is read from), inf for an overflow.
  auto norm_of_a_step = [](ZeroTrainer& t, int64_t step) {
    const int64_t rows = kGlobalBatch / t.comm.world_size();
    auto [x, y] = batch(step, 0, t.comm.rank() * rows, rows);
    t.zero.backward(t.model.loss(x.to(t.device), y.to(t.device)), true);
    const GradNorm norm = t.zero.clip_grad_norm(kClip);
    t.zero.step(kLr);
    t.zero.zero_grad();
    return norm.value();
  };
  int finite = 0;
  for (int64_t step = kSteps; step < kSteps + 3; ++step) {
    const double norm = norm_of_a_step(deferred, step);
    EXPECT_EQ(norm, norm_of_a_step(at_once, step)) << "step " << step;
    finite += std::isfinite(norm) && norm > 0 ? 1 : 0;
  }
  EXPECT_GE(finite, 1) << "no step's norm was finite: the comparison covered overflows only";
  // Their checkpoints' indexes (step counts, the scaler's state) are the same text.
  const std::string deferred_dir = fresh_dir("fp16-deferred"), at_once_dir = fresh_dir("fp16-at-once");
  deferred.zero.save_checkpoint(deferred_dir), at_once.zero.save_checkpoint(at_once_dir);
  if (world().rank() == 0) {  // (it writes the index)
    auto text = [](const std::string& path) {
      std::ifstream in(path);
      return std::string(std::istreambuf_iterator<char>(in), {});
    };
    const std::string deferred_index = text(deferred_dir + "/index.json");
    EXPECT_NE(deferred_index, "");
    EXPECT_TRUE(deferred_index == text(at_once_dir + "/index.json")) << "the indexes differ (diff the directories "
                                                                    << deferred_dir << " and " << at_once_dir << ")";
    if (!HasFailure()) std::filesystem::remove_all(deferred_dir), std::filesystem::remove_all(at_once_dir);
  }
}

}  // namespace
}  // namespace sg
