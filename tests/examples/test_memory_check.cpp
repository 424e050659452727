// train_gpt's check before its first step (examples/memory_check.h).
#include "examples/memory_check.h"

#include <gtest/gtest.h>

#include <string>

#include "kernels/error.h"

namespace sg {
namespace {

constexpr int64_t kMiB = int64_t(1) << 20;

// The message a check that fails throws ("" when it passes).
std::string refusal(const RankMemoryNeed& need, const TrainFlags& flags, Device device, const DeviceMemory& memory,
                    int64_t held, int sharing) {
  try {
    check_run_fits(need, flags, device, memory, held, sharing);
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

TEST(MemoryCheck, RanksOnADevice) {
  EXPECT_EQ(ranks_on_device(Device::cpu(), 4, 0), 4);
  EXPECT_EQ(ranks_on_device(Device::cuda(0), 4, 1), 4);  // four ranks sharing one GPU
  EXPECT_EQ(ranks_on_device(Device::cuda(0), 3, 2), 2);  // local ranks 0 and 2
  EXPECT_EQ(ranks_on_device(Device::cuda(1), 3, 2), 1);  // local rank 1
  EXPECT_EQ(ranks_on_device(Device::cuda(3), 8, 8), 1);
  EXPECT_EQ(ranks_on_device(Device::cuda(5), 2, 8), 0);
  EXPECT_THROW(ranks_on_device(Device::cuda(2), 4, 2), Error);
}

TEST(MemoryCheck, ARunThatFitsPasses) {
  TrainFlags flags;
  const RankMemoryNeed need{.states = 100 * kMiB, .activation_peak = 300 * kMiB};
  EXPECT_EQ(refusal(need, flags, Device::cpu(), {.free_bytes = 400 * kMiB, .total_bytes = 1024 * kMiB}, 0, 1), "");
  // What a rank holds already counts as its own: 350 free and 50 held.
  EXPECT_EQ(refusal(need, flags, Device::cpu(), {.free_bytes = 350 * kMiB, .total_bytes = 1024 * kMiB}, 50 * kMiB, 1),
            "");
  // Memory not known (a system without /proc/meminfo): nothing to hold it to.
  EXPECT_EQ(refusal(need, flags, Device::cpu(), {}, 0, 1), "");
}

TEST(MemoryCheck, ARunThatCannotFitSaysWhatToChange) {
  TrainFlags flags;
  flags.batch = 64, flags.ctx = 1024, flags.zero = 1;
  const RankMemoryNeed need{.states = 100 * kMiB, .activation_peak = 300 * kMiB};
  const std::string message =
      refusal(need, flags, Device::cuda(0), {.free_bytes = 399 * kMiB, .total_bytes = 1024 * kMiB}, 0, 1);
  EXPECT_EQ(message, "a micro-batch of 64 x 1024 tokens needs about 400.0 MiB on each rank (100.0 MiB of model states, "
                     "300.0 MiB of activations at a step's peak), more than the 399.0 MiB cuda:0 can give (1024.0 MiB "
                     "in all): use a smaller --batch (a larger --grad-accum keeps the global batch), "
                     "--checkpoint-activations 1, --loss-chunk 4096, a higher --zero stage, or a GPU with more memory");
  // What the run does already is not suggested again.
  flags.checkpoint_activations = 1, flags.loss_chunk = 4096, flags.zero = 3;
  const std::string cpu =
      refusal(need, flags, Device::cpu(), {.free_bytes = 399 * kMiB, .total_bytes = 1024 * kMiB}, 0, 1);
  const std::string tail = "more than the 399.0 MiB this node's memory can give (1024.0 MiB in all): use a smaller "
                           "--batch (a larger --grad-accum keeps the global batch)";
  ASSERT_GE(cpu.size(), tail.size()) << cpu;
  EXPECT_EQ(cpu.substr(cpu.size() - tail.size()), tail);
}

// A model whose states alone do not fit: no micro-batch would, so the
// advice is about the model and the ranks, not the batch.
TEST(MemoryCheck, AModelThatCannotFitSaysSoBeforeTheBatch) {
  TrainFlags flags;
  flags.zero = 1;
  const RankMemoryNeed need{.states = 500 * kMiB, .activation_peak = 300 * kMiB};
  const DeviceMemory memory{.free_bytes = 400 * kMiB, .total_bytes = 1024 * kMiB};
  EXPECT_EQ(refusal(need, flags, Device::cuda(0), memory, 0, 1),
            "the model's states (parameters, gradients, optimizer states) need about 500.0 MiB on each rank at ZeRO "
            "stage 1, more than the 400.0 MiB cuda:0 can give (1024.0 MiB in all), before any activations: --zero 3 "
            "spreads all of them over the ranks; more ranks, each on its own GPU, hold less each; or train a smaller "
            "model (--layers, --embd)");
  flags.zero = 3;
  const std::string message = refusal(need, flags, Device::cpu(), memory, 0, 2);
  EXPECT_NE(message.find("500.0 MiB on each rank at ZeRO stage 3, 1000.0 MiB for the 2 ranks sharing this node's "
                         "memory, more than the 400.0 MiB"),
            std::string::npos) << message;
  EXPECT_NE(message.find("activations: more ranks, each on its own node, hold less each"), std::string::npos) << message;
}

TEST(MemoryCheck, RanksSharingADeviceNeedItsMemoryBetweenThem) {
  TrainFlags flags;
  const RankMemoryNeed need{.states = 100 * kMiB, .activation_peak = 300 * kMiB};
  const DeviceMemory memory{.free_bytes = 700 * kMiB, .total_bytes = 1024 * kMiB};
  EXPECT_EQ(refusal(need, flags, Device::cpu(), memory, 0, 1), "");
  const std::string message = refusal(need, flags, Device::cpu(), memory, 0, 2);
  EXPECT_NE(message.find("needs about 400.0 MiB on each rank"), std::string::npos) << message;
  EXPECT_NE(message.find("800.0 MiB for the 2 ranks sharing this node's memory, more than the 700.0 MiB"),
            std::string::npos) << message;
  EXPECT_NE(message.find("a higher --zero stage, or fewer ranks on this node"), std::string::npos) << message;
  // Each holds 50 MiB already: 800 available, enough for both.
  EXPECT_EQ(refusal(need, flags, Device::cpu(), memory, 50 * kMiB, 2), "");
  // But never more than the device has in all.
  EXPECT_NE(refusal(need, flags, Device::cpu(), {.free_bytes = 700 * kMiB, .total_bytes = 790 * kMiB}, 50 * kMiB, 2),
            "");
}

TEST(MemoryCheck, TheHostsMemoryAsTheKernelReportsIt) {
  const DeviceMemory host = host_memory();
  ASSERT_GT(host.total_bytes, 0) << "this test runs on Linux, which has /proc/meminfo";
  EXPECT_GT(host.free_bytes, 0);
  EXPECT_LE(host.free_bytes, host.total_bytes);
}

}  // namespace
}  // namespace sg
