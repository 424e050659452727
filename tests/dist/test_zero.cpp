// The central invariant: ZeRO at any stage on any number of ranks computes the
// same training run as one process. Each rank trains its slice of a fixed
// global batch of 12 sequences (so 1, 2, 3 and 4 ranks all divide it), with
// gradient accumulation 2 and clipping on, for 10 steps; the per-step losses
// and the final parameters must equal the one-process run of plain AdamW.
#include <cmath>

#include "dist/backends.h"
#include "tests/dist/zero_test_util.h"
#include "tools/zero_memory_model.h"

namespace sg {
namespace {

using namespace zero_test;

TEST_P(ZeroEquivalence, SameLossesAndParametersAsOneProcess) { check(zero_run(GetParam()), reference(), GetParam()); }

INSTANTIATE_TEST_SUITE_P(Stages, ZeroEquivalence, ::testing::Values(0, 1, 2, 3),
                         [](const auto& info) { return "stage" + std::to_string(info.param); });

// The same with every collective through the staged backend (copies into
// pinned staging buffers around the host collective: on a GPU, how ranks
// sharing it reduce), here on CPU tensors: ZeRO's real traffic (buckets,
// views of flat buffers, averages) through the staging logic.
class ZeroEquivalenceThroughStaging : public ZeroEquivalence {};

TEST_P(ZeroEquivalenceThroughStaging, SameLossesAndParametersAsOneProcess) {
  std::unique_ptr<Backend> host = make_local_backend();
#ifdef SG_MPI
  if (launched_by_mpi()) host = make_mpi_backend();
#endif
  Communicator staged(world().rank(), world().world_size(), make_staged_backend(std::move(host)));
  check(zero_run(GetParam(), false, {}, Device::cpu(), &staged), reference(), GetParam());
  if (world().world_size() > 1) {
    EXPECT_GT(staged.stats().total_bytes_sent(), 0) << "the traffic went through staging";
  }
}

INSTANTIATE_TEST_SUITE_P(Stages, ZeroEquivalenceThroughStaging, ::testing::Values(0, 1, 2, 3),
                         [](const auto& info) { return "stage" + std::to_string(info.param); });

// The same on CUDA tensors: every rank's model, batches and collectives on
// the GPU (ranks sharing one GPU reduce through pinned host staging), held
// to the CPU's one-process run at 1e-4.
class ZeroEquivalenceOnCuda : public ZeroEquivalence {};

TEST_P(ZeroEquivalenceOnCuda, SameLossesAndParametersAsOneCpuProcess) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU visible; scripts/gpu_check.sh runs this on one";
  check(zero_run(GetParam(), false, {}, local_cuda_device()), reference(), GetParam(), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Stages, ZeroEquivalenceOnCuda, ::testing::Values(0, 1, 2, 3),
                         [](const auto& info) { return "stage" + std::to_string(info.param); });

// The same with each block checkpointed (autograd/checkpoint.h): its
// parameters' gradients arrive from a backward inside the outer one, and at
// stage 3 the block is gathered again for its second forward; the run must
// still be the one process's, plain (stage 3 born partitioned), on the CPU
// and on CUDA tensors.
class ZeroEquivalenceWithCheckpointedBlocks : public ZeroEquivalence {};

TrainingRun checkpointed_zero_run(int stage, Device device) {
  ZeroTrainer trainer(stage, /*born_partitioned=*/stage == 3, {}, device);
  trainer.model.checkpoint_activations(true);
  TrainingRun run;
  run.losses = trainer.train(0, kSteps);
  run.params = trainer.parameters();
  return run;
}

TEST_P(ZeroEquivalenceWithCheckpointedBlocks, SameLossesAndParametersAsOneProcess) {
  check(checkpointed_zero_run(GetParam(), Device::cpu()), reference(), GetParam());
}

INSTANTIATE_TEST_SUITE_P(Stages, ZeroEquivalenceWithCheckpointedBlocks, ::testing::Values(0, 1, 2, 3),
                         [](const auto& info) { return "stage" + std::to_string(info.param); });

// The same with the LM head and its loss 5 rows at a time (uneven chunks on
// every world size; autograd/chunked_loss.cpp): its gradients are made in
// the forward and only scaled in backward, so at stage 3 the tied embedding
// is not gathered again for the head's backward. The same run, to the CPU
// tolerance (the loss's 1/n comes after the products there).
class ZeroEquivalenceWithChunkedLoss : public ZeroEquivalence {};

TEST_P(ZeroEquivalenceWithChunkedLoss, SameLossesAndParametersAsOneProcess) {
  ZeroTrainer trainer(GetParam(), /*born_partitioned=*/GetParam() == 3, {}, Device::cpu());
  trainer.model.loss_chunk_rows(5);
  TrainingRun run;
  run.losses = trainer.train(0, kSteps);
  run.params = trainer.parameters();
  check(run, reference(), GetParam());
}

INSTANTIATE_TEST_SUITE_P(Stages, ZeroEquivalenceWithChunkedLoss, ::testing::Values(0, 1, 2, 3),
                         [](const auto& info) { return "stage" + std::to_string(info.param); });

// On CUDA tensors at stage 3 alone (the stage with the most moving parts:
// gathers again for the second forward, reductions from the inner backward),
// which the emulator runs at 1, 2 and 4 ranks on every CI pass.
TEST(ZeroStage3, CheckpointedBlocksOnCudaTrainLikeOneCpuProcess) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU visible; scripts/gpu_check.sh runs this on one";
  ZeroEquivalence::check(checkpointed_zero_run(3, local_cuda_device()), reference(), 3, 1e-4);
}

// The chunked loss on CUDA tensors at stage 3, in the emulator at 1, 2 and 4 ranks.
TEST(ZeroStage3, ChunkedLossOnCudaTrainsLikeOneCpuProcess) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU visible; scripts/gpu_check.sh runs this on one";
  ZeroTrainer trainer(3, /*born_partitioned=*/true, {}, local_cuda_device());
  trainer.model.loss_chunk_rows(5);
  TrainingRun run;
  run.losses = trainer.train(0, kSteps);
  run.params = trainer.parameters();
  ZeroEquivalence::check(run, reference(), 3, 1e-4);
}

TEST(ZeroGroups, OneGroupPerUnitAndDecayClassWithNamesAndOffsets) {
  Gpt model(config());
  std::vector<ZeroParameter> params = zero_parameters(model, config().seed);
  ZeroOptimizer zero(params, world(), {.stage = 1, .adam = {}});
  std::vector<std::string> names;
  for (const ShardGroup& g : zero.groups()) names.push_back(g.name());
  EXPECT_EQ(names, (std::vector<std::string>{"wte (no decay)", "wpe (no decay)", "h.0 (no decay)", "h.0", "h.1 (no decay)",
                                             "h.1", "ln_f (no decay)"}));
  const ShardGroup& block = zero.groups()[3];  // h.0's decayed weights
  EXPECT_EQ(block.params()[0].name, "h.0.attn.c_attn.weight");
  EXPECT_EQ(block.params()[1].offset, 3 * 16 * 16);
  EXPECT_EQ(block.padded() % (16 * world().world_size()), 0);
  // The parameters now live in the group's buffer.
  EXPECT_EQ(block.params()[0].variable.data().data_ptr(), block.flat_params().data_ptr());
  EXPECT_THROW(ZeroOptimizer(params, world(), {.stage = 4, .adam = {}}), Error);
}

// Stages 0-1's flat gradient buffer is not zero-filled: the padding is
// zeroed, each parameter's view is written by the first backward that
// reaches it (leftovers, here NaN, are overwritten, not added to), and a
// view no backward reached is zeroed before the buffer is reduced.
TEST(ZeroGroups, FlatGradientsAreWrittenNotZeroFilled) {
  Variable a(Tensor::from_vector(std::vector<float>{1, 2, 3}, {3}), true, "u.a");
  Variable b(Tensor::from_vector(std::vector<float>{4, 5}, {2}), true, "u.b");
  ShardGroup group("u", {{"u.a", a}, {"u.b", b}}, world().rank(), world().world_size(), 4);
  Tensor& flat = group.attach_flat_grads();
  std::vector<float> values = flat.to_vector<float>();
  for (size_t i = 5; i < values.size(); ++i) ASSERT_EQ(values[i], 0.0f) << "padding element " << i;
  flat.slice(0, 0, 5).fill_(std::nan(""));  // what an unzeroed buffer might hold
  sum(mul(a, a)).backward();                 // reaches a only: d/da = 2a
  values = flat.to_vector<float>();
  EXPECT_EQ(std::vector<float>(values.begin(), values.begin() + 3), (std::vector<float>{2, 4, 6}));
  EXPECT_TRUE(std::isnan(values[3])) << "b's view is left as it was until it is needed";
  sum(mul(a, a)).backward();  // a second micro-batch adds
  EXPECT_EQ(a.grad().to_vector<float>(), (std::vector<float>{4, 8, 12}));
  group.zero_unwritten_grads();
  values = flat.to_vector<float>();
  EXPECT_EQ(std::vector<float>(values.begin(), values.begin() + 5), (std::vector<float>{4, 8, 12, 0, 0}));
}


// Per-rank model-state bytes from the allocator after a step, against ZeRO's
// formulas for fp32 AdamW (4 bytes of parameter, 4 of gradient, 8 of moments
// per element; P = padded elements of all groups, N = ranks):
//   stage 0:  parameters 4P   gradients 4P            optimizer states 8P
//   stage 1:  parameters 4P   gradients 4P + 4P/N     optimizer states 8P/N
//   stage 2:  parameters 4P   gradients 4P/N          optimizer states 8P/N
//   stage 3:  parameters 4P/N gradients 4P/N          optimizer states 8P/N
// (Stage 1 keeps the full gradients until zero_grad and reduce-scatters them
// into a separate slice; stage 2 never holds more than one group's full
// gradients at a time, and those count as communication buffers.)
TEST(ZeroMemory, ModelStateBytesFollowThePaper) {
  Communicator& comm = world();
  const int64_t N = comm.world_size();
  for (int stage : {0, 1, 2, 3}) {
    const MemoryStats before = memory_stats(Device::cpu());
    auto live = [&](MemoryCategory c) { return memory_stats(Device::cpu())[c].live - before[c].live; };
    {
      OneStepSetup setup(stage);
      ZeroOptimizer& zero = setup.zero;
      const Gpt& model = setup.model;
      const Tensor &x = setup.x, &y = setup.y;
      const int64_t P = zero.padded_elements();
      EXPECT_EQ(P % (16 * N), 0);
      zero.backward(model.loss(x, y), true);
      zero.step(kLr);
      EXPECT_EQ(live(MemoryCategory::parameter), stage == 3 ? 4 * P / N : 4 * P) << "stage " << stage;
      EXPECT_EQ(live(MemoryCategory::communication), 0) << "stage " << stage;  // gathers released after the step
      const int64_t gradients[] = {4 * P, 4 * P + 4 * P / N, 4 * P / N, 4 * P / N};
      EXPECT_EQ(live(MemoryCategory::gradient), gradients[stage]) << "stage " << stage;
      EXPECT_EQ(live(MemoryCategory::optimizer_state), stage == 0 ? 8 * P : 8 * P / N) << "stage " << stage;
      // The estimator (tools/zero_memory) predicts the same bytes.
      ZeroMemoryEstimate e = estimate_zero_memory(config(), int(N), stage);
      EXPECT_EQ(e.padded_elements, P);
      EXPECT_NEAR(double(e.parameters), double(live(MemoryCategory::parameter)), 0.05 * double(e.parameters));
      EXPECT_NEAR(double(e.gradients), double(live(MemoryCategory::gradient)), 0.05 * double(e.gradients));
      EXPECT_NEAR(double(e.optimizer_states), double(live(MemoryCategory::optimizer_state)),
                  0.05 * double(e.optimizer_states));
      if (stage == 3) {
        // During a forward, at most the token embedding (read again by the
        // tied head), a block's two groups and one prefetched group are
        // gathered: the estimator's gather buffers.
        reset_peak_memory(Device::cpu());
        { NoGradGuard no_grad; model.loss(x, y); }
        EXPECT_LE(memory_stats(Device::cpu())[MemoryCategory::communication].peak - before[MemoryCategory::communication].live,
                  e.gather_buffers);
      }
      zero.zero_grad();
      EXPECT_EQ(live(MemoryCategory::gradient), 0) << "stage " << stage;
    }
    EXPECT_EQ(live(MemoryCategory::parameter), 0);
  }
}


// After a stage-3 step no rank holds a whole parameter: each is a released
// placeholder, and reading it outside forward/backward is a clear error.
TEST(ZeroStage3, ParametersAreReleasedAfterAStepAndGatheredOnUse) {
  Communicator& comm = world();
  OneStepSetup setup(3);
  ZeroOptimizer& zero = setup.zero;
  const Gpt& model = setup.model;
  const Tensor &x = setup.x, &y = setup.y;
  for (const NamedParameter& p : model.named_parameters()) EXPECT_TRUE(p.variable.data().layout().is_released()) << p.name;
  zero.backward(model.loss(x, y), true);
  zero.step(kLr);
  zero.zero_grad();
  for (const NamedParameter& p : model.named_parameters()) {
    EXPECT_TRUE(p.variable.data().layout().is_released()) << p.name;
    EXPECT_FALSE(p.variable.grad().defined()) << p.name;
  }
  try {
    model.named_parameters()[4].variable.data().at({0, 0});
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("released ZeRO-3 parameter"), std::string::npos) << e.what();
  }
  EXPECT_EQ(model.named_parameters()[4].variable.data().str(), "f32[48@dp/" + std::to_string(comm.world_size()) + ", 16]");
  // value() gathers: a forward pass works, and leaves at most two groups gathered.
  Variable loss = model.loss(x, y);
  EXPECT_GT(loss.data().item(), 0.0);
  int gathered = 0;
  for (const ShardGroup& g : zero.groups()) gathered += g.is_gathered();
  EXPECT_LE(gathered, 2);
}


// Born partitioned: built under DeferredParameters, the model allocates no
// parameter memory; the optimizer creates each rank's slices only (4P/N bytes
// at the peak, never the whole model), with exactly the values a model
// built whole would have; and training matches one process.
TEST(ZeroStage3, BornPartitionedNeverHoldsTheWholeModel) {
  Communicator& comm = world();
  const int64_t N = comm.world_size();
  const MemoryStats before = memory_stats(Device::cpu());
  reset_peak_memory(Device::cpu());
  std::optional<DeferredParameters> deferred{std::in_place};
  Gpt model(config());
  deferred.reset();
  EXPECT_EQ(memory_stats(Device::cpu())[MemoryCategory::parameter].live, before[MemoryCategory::parameter].live);
  ZeroOptimizer zero(zero_parameters(model, config().seed), comm, {.stage = 3, .adam = {.lr = kLr}});
  const int64_t P = zero.padded_elements();
  const MemoryStats after = memory_stats(Device::cpu());
  EXPECT_EQ(after[MemoryCategory::parameter].live - before[MemoryCategory::parameter].live, 4 * P / N);
  EXPECT_LE(after[MemoryCategory::parameter].peak - before[MemoryCategory::parameter].live, 4 * P / N);

  Gpt whole(config());
  std::vector<NamedParameter> expected = whole.named_parameters();
  std::map<std::string, Tensor> values;
  for (auto& [name, value] : zero.full_parameters()) values[name] = value;
  for (const NamedParameter& p : expected) {
    EXPECT_EQ(values.at(p.name).to_vector<float>(), p.variable.data().to_vector<float>()) << p.name;
  }
}

TEST(ZeroStage3, BornPartitionedTrainsLikeOneProcess) {
  TrainingRun run = zero_run(3, /*born_partitioned=*/true);
  ZeroEquivalence::check(run, reference(), 3);
}

TEST(ZeroStage3, DeferredParametersNeedStageThree) {
  std::optional<DeferredParameters> deferred{std::in_place};
  Gpt model(config());
  deferred.reset();
  EXPECT_THROW(ZeroOptimizer(zero_parameters(model, config().seed), world(), {.stage = 2, .adam = {}}), Error);
}


}  // namespace
}  // namespace sg
