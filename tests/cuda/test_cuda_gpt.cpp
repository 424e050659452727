// One GPT training step on CUDA f32 against the CPU: the same initial
// parameters (Philox gives the CPU's bits on the GPU), the same batch; the
// loss and every parameter's gradient agree to 1e-4 relative, with each
// attention form on the GPU, with the fused loss and LayerNorm backward
// switched off, and with the MLP's GELU and the biases' gradients in their
// GEMMs' epilogues switched on; and sampling's KV cache against the CPU's.
// Skips without a GPU.
#include <cmath>
#include <cstdlib>
#include <optional>
#include <string>

#include "autograd/functions.h"
#include "kernels/cuda/matmul_lt.h"
#include "nn/gpt.h"
#include "tests/cuda/cuda_test_util.h"

namespace sg {
namespace {

using test::all_close;
using GptOnCuda = test::CudaTest;

GptConfig small() {
  GptConfig cfg;
  cfg.vocab_size = 37, cfg.block_size = 24, cfg.n_layer = 2, cfg.n_head = 4, cfg.n_embd = 64, cfg.seed = 11;
  return cfg;
}

struct StepResult {
  double loss = 0;
  std::vector<std::vector<float>> grads;
};

// With buffers, every parameter's gradient goes into an f32 buffer given
// beforehand, as ZeRO gives them (claim_leaf_grad), written by the step.
StepResult one_step(Device device, bool buffers = false) {
  std::optional<ParametersOn> placed;
  placed.emplace(device);
  Gpt model(small());
  placed.reset();
  if (buffers) {
    for (const NamedParameter& p : model.named_parameters()) {
      Variable v = p.variable;
      v.set_stale_grad(Tensor::full(v.shape(), std::nan(""), TensorOptions().device(device)));
    }
  }
  std::vector<int32_t> ids;
  for (int i = 0; i < 3 * 25; ++i) ids.push_back(int32_t((i * 7 + i / 5) % 37));
  Tensor all = Tensor::from_vector(ids, {3, 25});
  Tensor x = all.slice(1, 0, 24).contiguous().to(device), y = all.slice(1, 1, 25).contiguous().to(device);
  Variable loss = model.loss(x, y);
  loss.backward();
  StepResult result;
  result.loss = loss.data().item();
  for (const NamedParameter& p : model.named_parameters()) result.grads.push_back(p.variable.grad().to_vector<float>());
  return result;
}

// Sampling's path on the GPU (Gpt::extend with a KV cache: the cache's
// prefix read in place by the GEMMs, one query's softmax): a prompt, then
// token by token, the CPU's logits at every step.
TEST_F(GptOnCuda, SamplingWithAKvCacheMatchesTheCpu) {
  std::vector<int32_t> ids;
  for (int i = 0; i < 2 * 12; ++i) ids.push_back(int32_t((i * 5 + i / 3) % 37));
  const Tensor all = Tensor::from_vector(ids, {2, 12});
  auto logits_token_by_token = [&](Device device) {
    std::optional<ParametersOn> placed;
    placed.emplace(device);
    Gpt model(small());
    placed.reset();
    KvCache cache;
    std::vector<std::vector<float>> steps;
    for (int64_t end = 5; end <= 12; ++end) {
      const int64_t from = end == 5 ? 0 : end - 1;
      steps.push_back(model.extend(all.slice(1, from, end).contiguous().to(device), cache).to_vector<float>());
    }
    return steps;
  };
  const auto cpu = logits_token_by_token(Device::cpu()), cuda = logits_token_by_token(Device::cuda());
  ASSERT_EQ(cuda.size(), cpu.size());
  for (size_t i = 0; i < cpu.size(); ++i) EXPECT_TRUE(all_close(cuda[i], cpu[i], 1e-4, 1e-5)) << "step " << i;
}

// A micro-batch whose every target is ignored (padding only): the mean
// loss is NaN (a mean of nothing, as PyTorch's) and the gradients are 0,
// not NaN, with the loss's gradient written in the forward or not.
TEST_F(GptOnCuda, LinearCrossEntropyOverOnlyIgnoredTargetsHasZeroGradients) {
  const int64_t N = 8, C = 16, V = 40;
  const Tensor targets = Tensor::from_vector(std::vector<int32_t>(size_t(N), -1), {N}).to(Device::cuda());
  for (const char* fused : {"1", "0"}) {
    SCOPED_TRACE(std::string("fused ") + fused);
    setenv("SG_FUSED_CROSS_ENTROPY", fused, 1);
    Variable x(test::random_tensor({N, C}, "x").to(Device::cuda()), true);
    Variable w(test::random_tensor({V, C}, "w").to(Device::cuda()), true);
    Variable loss = linear_cross_entropy(x, w, targets);
    loss.backward();
    unsetenv("SG_FUSED_CROSS_ENTROPY");
    EXPECT_TRUE(std::isnan(loss.data().item()));
    for (const Variable* v : {&x, &w}) {
      for (float g : v->grad().to_vector<float>()) ASSERT_EQ(g, 0.0f);
    }
  }
}

void expect_matches(const StepResult& gpu, const StepResult& cpu) {
  EXPECT_NEAR(gpu.loss, cpu.loss, 1e-4 * std::abs(cpu.loss));
  ASSERT_EQ(gpu.grads.size(), cpu.grads.size());
  for (size_t i = 0; i < cpu.grads.size(); ++i) {
    double scale = 0;
    for (float g : cpu.grads[i]) scale = std::max(scale, double(std::abs(g)));
    EXPECT_TRUE(all_close(gpu.grads[i], cpu.grads[i], 1e-4, 1e-4 * scale)) << "gradient " << i;
  }
}

TEST_F(GptOnCuda, OneStepLossAndGradientsMatchTheCpu) {
  const StepResult cpu = one_step(Device::cpu());
  for (AttentionForm form : {AttentionForm::automatic, AttentionForm::gemm, AttentionForm::fused, AttentionForm::naive}) {
    for (const char* fused_elsewhere : {"1", "0"}) {  // "0": the loss and LayerNorm backward as separate kernels
      if (fused_elsewhere[0] == '0' && form != AttentionForm::automatic) continue;
      setenv("SG_FUSED_CROSS_ENTROPY", fused_elsewhere, 1);
      setenv("SG_LAYERNORM_FUSED_BACKWARD", fused_elsewhere, 1);
      set_attention_form(form);
      const StepResult gpu = one_step(Device::cuda());
      set_attention_form(AttentionForm::automatic);
      unsetenv("SG_FUSED_CROSS_ENTROPY");
      unsetenv("SG_LAYERNORM_FUSED_BACKWARD");
      SCOPED_TRACE("attention form " + std::to_string(int(form)) + ", fused loss and LayerNorm " + fused_elsewhere);
      expect_matches(gpu, cpu);
    }
  }
  // The GEMMs' other epilogues (off by default): the MLP's GELU inside its
  // GEMMs (one forward and one backward a layer), and the biases' gradients
  // out of their weights' GEMMs, which needs gradient buffers (qkv, both
  // projections, and c_fc's where dh comes out of a GEMM too).
  struct Variant {
    const char *gelu, *bias_grads;
    int64_t gelu_gemms, row_sum_gemms;  // a layer
  };
  for (const Variant& v : {Variant{"1", "0", 2, 0}, Variant{"0", "1", 0, 3}, Variant{"1", "1", 2, 4}}) {
    SCOPED_TRACE(std::string("GELU epilogues ") + v.gelu + ", bias gradients from the weights' GEMMs " + v.bias_grads);
    setenv("SG_GEMM_GELU_EPILOGUE", v.gelu, 1);
    setenv("SG_GEMM_BIAS_GRAD_EPILOGUE", v.bias_grads, 1);
    const cuda::LtEpilogueCounts before = cuda::lt_epilogue_gemms();
    const StepResult gpu = one_step(Device::cuda(), /*buffers=*/true);
    unsetenv("SG_GEMM_GELU_EPILOGUE");
    unsetenv("SG_GEMM_BIAS_GRAD_EPILOGUE");
    const cuda::LtEpilogueCounts after = cuda::lt_epilogue_gemms();
    EXPECT_EQ(after.gelu - before.gelu, v.gelu_gemms * small().n_layer);
    EXPECT_EQ(after.row_sums - before.row_sums, v.row_sum_gemms * small().n_layer);
    expect_matches(gpu, cpu);
  }
}

// N targets spread over V ids, the one at `ignored` left out (-1).
Tensor head_targets(int64_t N, int64_t V, int64_t ignored) {
  std::vector<int32_t> values;
  for (int64_t n = 0; n < N; ++n) values.push_back(n == ignored ? -1 : int32_t((n * 37) % V));
  return Tensor::from_vector(values, {N});
}

// The loss, dx and dW of a head on the GPU against the CPU's, each gradient
// to `tolerance` of its largest element.
void expect_outputs_close(const std::vector<std::vector<float>>& gpu, const std::vector<std::vector<float>>& cpu,
                          double tolerance) {
  for (size_t i = 0; i < 3; ++i) {
    double scale = 0;
    for (float g : cpu[i]) scale = std::max(scale, double(std::abs(g)));
    EXPECT_TRUE(all_close(gpu[i], cpu[i], tolerance, tolerance * scale)) << "output " << i;
  }
}

// The LM head and loss on CUDA: one kernel writes g = softmax - onehot over
// the logits in the forward, and backward scales by dloss / n on the (N, C)
// sides. Against the CPU (which keeps the two passes), with an ignored row
// and a dloss other than 1; backward allocates nothing of the logits' size;
// under retain_graph g is intact for a second pass.
TEST_F(GptOnCuda, LinearCrossEntropyWritesItsGradientInTheForward) {
  const int64_t N = 64, C = 16, V = 1000;
  const Tensor x0 = test::random_tensor({N, C}, "x"), w0 = test::random_tensor({V, C}, "w");
  const Tensor targets = head_targets(N, V, 5);
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    auto run = [&](Device device, bool retain, int64_t* backward_growth) {
      Variable x(x0.to(dtype).to(device), true), w(w0.to(dtype).to(device), true);
      Variable loss = linear_cross_entropy(x, w, targets.to(device));
      const Tensor dloss = Tensor::full({}, 0.75).to(device);
      const int64_t before = memory_stats(device)[MemoryCategory::activation].live;
      reset_peak_memory(device);
      loss.backward(dloss, retain);
      *backward_growth = memory_stats(device)[MemoryCategory::activation].peak - before;
      if (retain) loss.backward(dloss);
      return std::vector<std::vector<float>>{{float(loss.data().item())}, x.grad().to_vector<float>(),
                                             w.grad().to_vector<float>()};
    };
    int64_t cpu_growth = 0, gpu_growth = 0, retained_growth = 0;
    const auto cpu = run(Device::cpu(), false, &cpu_growth), gpu = run(Device::cuda(), false, &gpu_growth);
    const double tolerance = dtype == DType::f32 ? 1e-5 : 2e-2;
    expect_outputs_close(gpu, cpu, tolerance);
    EXPECT_LT(gpu_growth, N * V * int64_t(dtype_size(dtype))) << "no (N, V) buffer in the backward";
    const auto twice = run(Device::cuda(), true, &retained_growth);
    for (size_t i = 1; i < 3; ++i) {
      for (size_t j = 0; j < twice[i].size(); ++j) EXPECT_FLOAT_EQ(twice[i][j], 2.0f * gpu[i][j]) << i << "," << j;
    }
  }
}

// The chunked head (autograd/chunked_loss.cpp) on CUDA: the loss and
// gradients of the CPU's whole head (an ignored row, a dloss other than 1),
// its forward holding a chunk of logits at a time.
TEST_F(GptOnCuda, ChunkedLinearCrossEntropyMatchesTheCpu) {
  const int64_t N = 64, C = 16, V = 1000, chunk = 16;
  const Tensor x0 = test::random_tensor({N, C}, "x"), w0 = test::random_tensor({V, C}, "w");
  const Tensor targets = head_targets(N, V, 30);
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    auto run = [&](Device device, int64_t rows, int64_t* forward_peak) {
      Variable x(x0.to(dtype).to(device), true), w(w0.to(dtype).to(device), true);
      const int64_t before = memory_stats(device)[MemoryCategory::activation].live;
      reset_peak_memory(device);
      Variable loss = chunked_linear_cross_entropy(x, w, targets.to(device), rows);
      *forward_peak = memory_stats(device)[MemoryCategory::activation].peak - before;
      loss.backward(Tensor::full({}, 0.75).to(device));
      return std::vector<std::vector<float>>{{float(loss.data().item())}, x.grad().to_vector<float>(),
                                             w.grad().to_vector<float>()};
    };
    int64_t cpu_peak = 0, gpu_peak = 0;
    const auto cpu = run(Device::cpu(), 0, &cpu_peak), gpu = run(Device::cuda(), chunk, &gpu_peak);
    const double tolerance = dtype == DType::f32 ? 1e-5 : 2e-2;
    expect_outputs_close(gpu, cpu, tolerance);
    // A quarter of the logits, dx and dW's f32 sums, against all the logits.
    EXPECT_LT(gpu_peak, N * V * int64_t(dtype_size(dtype))) << "a chunk of the logits at a time";
  }
}

}  // namespace
}  // namespace sg
