// The activation estimator (tools/activation_memory.h) against the
// allocator: the bytes a training step keeps when its forward returns and
// the most it holds at once, to the byte, on this rank's micro-batch, at
// every ZeRO stage, with and without activation checkpointing, over shapes
// where different terms lead (the blocks, the attention probabilities, the
// vocabulary).
#include "tests/dist/zero_test_util.h"
#include "tools/activation_memory.h"
#include "tools/zero_memory_model.h"

namespace sg {
namespace {

using zero_test::config;

struct Measured {
  int64_t kept = 0, peak = 0;
};

// The second of two steps (the first makes the model's cached positions),
// counted from before the batch's ids were made.
Measured measure_step(const GptConfig& cfg, int64_t batch, int stage, bool checkpointed, Device device = Device::cpu(),
                      DType dtype = DType::f32, int64_t loss_chunk_rows = 0) {
  Gpt model = [&] {
    ParametersOn placed(device);
    return Gpt(cfg);
  }();
  model.checkpoint_activations(checkpointed);
  model.loss_chunk_rows(loss_chunk_rows);
  ZeroOptions knobs;
  knobs.stage = stage, knobs.dtype = dtype;
  ZeroOptimizer zero(zero_parameters(model, cfg.seed), world(), knobs);
  auto live = [device] { return memory_stats(device)[MemoryCategory::activation].live; };
  const int64_t base = live();
  std::vector<int32_t> tokens(size_t(batch * (cfg.block_size + 1)));
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t((i * 7 + 3 + size_t(world().rank())) % 11);
  Tensor x, y;
  {
    const Tensor ids = Tensor::from_vector(tokens, {batch, cfg.block_size + 1});
    x = ids.slice(1, 0, cfg.block_size).contiguous().to(device),
    y = ids.slice(1, 1, cfg.block_size + 1).contiguous().to(device);
  }
  Measured m;
  for (int step = 0; step < 2; ++step) {
    reset_peak_memory(device);
    Variable loss = model.loss(x, y);
    m.kept = live() - base;
    zero.backward(loss, true);
    loss = Variable();
    zero.clip_grad_norm(1.0);
    zero.step(1e-3);
    zero.zero_grad();
    m.peak = memory_stats(device)[MemoryCategory::activation].peak - base;
  }
  return m;
}

TEST(ZeroActivations, EstimateIsTheAllocatorsCountToTheByte) {
  struct Case {
    const char* what;
    int64_t layers, embd, heads, vocab, ctx, batch;
  };
  const Case cases[] = {
      {"blocks lead", 2, 32, 4, 13, 16, 3},
      {"attention's probabilities lead", 1, 16, 2, 13, 64, 2},
      {"the vocabulary leads", 1, 16, 2, 257, 8, 2},
      {"the token embedding's gradient leads from stage 2", 1, 16, 2, 2048, 8, 1},
  };
  for (const Case& c : cases) {
    GptConfig cfg;
    cfg.n_layer = c.layers, cfg.n_embd = c.embd, cfg.n_head = c.heads, cfg.vocab_size = c.vocab;
    cfg.block_size = c.ctx, cfg.seed = 3;
    for (int stage = 0; stage <= 3; ++stage) {
      for (bool checkpointed : {false, true}) {
        SCOPED_TRACE(std::string(c.what) + ", stage " + std::to_string(stage) + (checkpointed ? ", checkpointed" : ""));
        const Measured m = measure_step(cfg, c.batch, stage, checkpointed);
        ActivationEstimate e =
            estimate_activations(cfg, {.batch = c.batch, .checkpointed = checkpointed, .stage = stage});
        EXPECT_EQ(e.kept, m.kept);
        EXPECT_EQ(e.peak, m.peak);
      }
    }
  }
}

// On CUDA in bf16, the forms a GPU training run takes: attention fused on
// tensor cores (each row's log-sum-exp kept, not the probabilities), the
// loss's gradient written over the logits in its forward.
TEST(ZeroActivations, EstimateOnCudaIsTheAllocatorsCountToTheByte) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU visible; scripts/gpu_check.sh runs this on one";
  for (int64_t vocab : {64, 4096}) {  // the blocks lead, then the vocabulary
    GptConfig cfg;
    cfg.n_layer = 1, cfg.n_embd = vocab == 64 ? 64 : 32, cfg.n_head = 2, cfg.vocab_size = vocab;
    cfg.block_size = vocab == 64 ? 32 : 16, cfg.seed = 3;
    for (int stage : {0, 3}) {
      for (bool checkpointed : {false, true}) {
        SCOPED_TRACE("vocabulary " + std::to_string(vocab) + ", stage " + std::to_string(stage) +
                     (checkpointed ? ", checkpointed" : ""));
        const Measured m = measure_step(cfg, 2, stage, checkpointed, local_cuda_device(), DType::bf16);
        ActivationEstimate e = estimate_activations(
            cfg, {.batch = 2, .dtype = DType::bf16, .cuda = true, .checkpointed = checkpointed, .stage = stage});
        EXPECT_EQ(e.attention, "fused, tensor cores (each row's log-sum-exp)");
        // On a GPU, AdamW holds the clipping factor it read last (an f32 on
        // the device, optim/zero.cpp) from one step to the next.
        const int64_t factor = 4;
        EXPECT_EQ(e.kept + factor, m.kept);
        EXPECT_EQ(e.peak + factor, m.peak);
      }
    }
  }
}

// The chunked loss on CUDA in bf16, where the logits would lead: chunks of
// 10 of 32 rows at stages 0 and 3, and a chunk of 100 of 128 rows at stage 0,
// where the forward's chunk of logits leads.
TEST(ZeroActivations, EstimateOnCudaWithTheLossInChunks) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU visible; scripts/gpu_check.sh runs this on one";
  struct Case {
    int64_t vocab, ctx, batch, chunk;
    int stage;
  };
  for (const Case& c : {Case{4096, 16, 2, 10, 0}, Case{4096, 16, 2, 10, 3}, Case{2048, 32, 4, 100, 0}}) {
    GptConfig cfg;
    cfg.n_layer = 1, cfg.n_embd = 32, cfg.n_head = 2, cfg.vocab_size = c.vocab, cfg.block_size = c.ctx, cfg.seed = 3;
    for (bool checkpointed : {false, true}) {
      SCOPED_TRACE("vocabulary " + std::to_string(c.vocab) + ", chunk " + std::to_string(c.chunk) + ", stage " +
                   std::to_string(c.stage) + (checkpointed ? ", checkpointed" : ""));
      const Measured m = measure_step(cfg, c.batch, c.stage, checkpointed, local_cuda_device(), DType::bf16, c.chunk);
      ActivationEstimate e = estimate_activations(cfg, {.batch = c.batch, .dtype = DType::bf16, .cuda = true,
                                                        .checkpointed = checkpointed, .stage = c.stage,
                                                        .loss_chunk_rows = c.chunk});
      EXPECT_EQ(e.kept + 4, m.kept);  // (AdamW's clipping factor, as above)
      EXPECT_EQ(e.peak + 4, m.peak);
    }
  }
}

// fp16 (its loss scaled) keeps what bf16 does; f32 on CUDA takes attention's
// GEMM form, which keeps the probabilities.
TEST(ZeroActivations, EstimateOnCudaInFp16AndF32) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU visible; scripts/gpu_check.sh runs this on one";
  GptConfig cfg;
  cfg.n_layer = 1, cfg.n_embd = 64, cfg.n_head = 2, cfg.vocab_size = 64, cfg.block_size = 32, cfg.seed = 3;
  for (DType dtype : {DType::f16, DType::f32}) {
    SCOPED_TRACE(dtype_name(dtype));
    const Measured m = measure_step(cfg, 2, 0, false, local_cuda_device(), dtype);
    ActivationEstimate e = estimate_activations(cfg, {.batch = 2, .dtype = dtype, .cuda = true});
    EXPECT_EQ(e.attention, dtype == DType::f16 ? "fused, tensor cores (each row's log-sum-exp)"
                                               : "GEMMs (the probabilities, B NH T^2)");
    EXPECT_EQ(e.kept + 4, m.kept);
    EXPECT_EQ(e.peak + 4, m.peak);
  }
}

// With the LM head and loss a chunk of rows at a time (Gpt::loss_chunk_rows):
// chunks that divide the rows and ones that do not, at stages 0 and 3, with
// and without checkpointing, where the logits would lead and where not.
TEST(ZeroActivations, EstimateWithTheLossInChunks) {
  struct Case {
    int64_t layers, embd, heads, vocab, ctx, batch, chunk;
  };
  for (const Case& c : {Case{2, 32, 4, 13, 16, 3, 16}, Case{1, 16, 2, 257, 8, 4, 10}, Case{1, 16, 2, 2048, 8, 2, 5},
                        Case{1, 32, 2, 2048, 32, 4, 40}}) {  // the last: a chunk of logits leads at stage 0
    GptConfig cfg;
    cfg.n_layer = c.layers, cfg.n_embd = c.embd, cfg.n_head = c.heads, cfg.vocab_size = c.vocab;
    cfg.block_size = c.ctx, cfg.seed = 3;
    for (int stage : {0, 3}) {
      for (bool checkpointed : {false, true}) {
        SCOPED_TRACE("vocabulary " + std::to_string(c.vocab) + ", chunk " + std::to_string(c.chunk) + ", stage " +
                     std::to_string(stage) + (checkpointed ? ", checkpointed" : ""));
        const Measured m = measure_step(cfg, c.batch, stage, checkpointed, Device::cpu(), DType::f32, c.chunk);
        ActivationEstimate e = estimate_activations(
            cfg, {.batch = c.batch, .checkpointed = checkpointed, .stage = stage, .loss_chunk_rows = c.chunk});
        EXPECT_EQ(e.kept, m.kept);
        EXPECT_EQ(e.peak, m.peak);
      }
    }
  }
}

// zero_memory --memory-gb: the largest micro-batch is the last whose model
// states and activation peak fit.
TEST(ZeroActivations, LargestMicroBatchIsTheLastThatFits) {
  const int64_t states = estimate_zero_memory(config(), 1, 0).total();
  const int64_t five = states + estimate_activations(config(), {.batch = 5}).peak;
  EXPECT_EQ(max_batch_that_fits(config(), 1, 0, DType::f32, {}, five), 5);
  EXPECT_EQ(max_batch_that_fits(config(), 1, 0, DType::f32, {}, five - 1), 4);
  EXPECT_EQ(max_batch_that_fits(config(), 1, 0, DType::f32, {}, states), 0);
  const int64_t thousand = states + estimate_activations(config(), {.batch = 1000}).peak;
  EXPECT_EQ(max_batch_that_fits(config(), 1, 0, DType::f32, {}, thousand), 1000);
}

TEST(ZeroActivations, BadSettingsAreClearErrors) {
  EXPECT_THROW(estimate_activations(config(), {.batch = 0}), Error);
  EXPECT_THROW(estimate_activations(config(), {.batch = 1, .stage = 4}), Error);
  EXPECT_THROW(estimate_activations(config(), {.batch = 1, .dtype = DType::bf16}), Error);  // a CPU's bf16
  EXPECT_NO_THROW(estimate_activations(config(), {.batch = 1, .dtype = DType::bf16, .cuda = true}));
  // Sizes whose bytes would overflow a count are refused, not wrapped around.
  GptConfig huge = config();
  huge.n_embd = 1 << 20, huge.n_head = 1, huge.n_layer = 1 << 20;
  EXPECT_THROW(estimate_zero_memory(huge, 1, 0), Error);
  EXPECT_THROW(estimate_activations(config(), {.batch = int64_t(1) << 50}), Error);
  const int64_t most = max_batch_that_fits(config(), 1, 0, DType::f32, {}, int64_t(1) << 60);
  EXPECT_GT(most, 1000);
  EXPECT_LT(double(estimate_activations(config(), {.batch = most}).peak), kMostBytesCounted);
}

}  // namespace
}  // namespace sg
