// One GPT training step on CUDA f32 against the CPU: the same initial
// parameters (Philox gives the CPU's bits on the GPU), the same batch; the
// loss and every parameter's gradient agree to 1e-4 relative, with each
// attention form on the GPU. Skips without a GPU.
#include <cmath>
#include <optional>

#include "autograd/functions.h"
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

StepResult one_step(Device device) {
  std::optional<ParametersOn> placed;
  placed.emplace(device);
  Gpt model(small());
  placed.reset();
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

TEST_F(GptOnCuda, OneStepLossAndGradientsMatchTheCpu) {
  const StepResult cpu = one_step(Device::cpu());
  for (AttentionForm form : {AttentionForm::automatic, AttentionForm::gemm, AttentionForm::fused, AttentionForm::naive}) {
    set_attention_form(form);
    const StepResult gpu = one_step(Device::cuda());
    set_attention_form(AttentionForm::automatic);
    SCOPED_TRACE("attention form " + std::to_string(int(form)));
    EXPECT_NEAR(gpu.loss, cpu.loss, 1e-4 * std::abs(cpu.loss));
    ASSERT_EQ(gpu.grads.size(), cpu.grads.size());
    for (size_t i = 0; i < cpu.grads.size(); ++i) {
      double scale = 0;
      for (float g : cpu.grads[i]) scale = std::max(scale, double(std::abs(g)));
      EXPECT_TRUE(all_close(gpu.grads[i], cpu.grads[i], 1e-4, 1e-4 * scale)) << "gradient " << i;
    }
  }
}

}  // namespace
}  // namespace sg
