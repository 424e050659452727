// The GPT model: GPT-2's parameter names and count, its initialization, the
// tied LM head, and a model that can learn (it overfits one batch).
#include <gtest/gtest.h>

#include <cmath>

#include "nn/gpt.h"
#include "optim/optimizers.h"
#include "tensor/ops.h"
#include "tensor/rng.h"
#include "tests/test_util.h"

namespace sg {
namespace {

GptConfig tiny_config() {
  GptConfig cfg;
  cfg.vocab_size = 11, cfg.block_size = 8, cfg.n_layer = 2, cfg.n_head = 2, cfg.n_embd = 8, cfg.seed = 7;
  return cfg;
}

Tensor ids(std::vector<int32_t> values, const Shape& shape) { return Tensor::from_vector(values, shape); }

TEST(Gpt, ParameterNamesAreGpt2s) {
  Gpt model(tiny_config());
  std::vector<std::string> names;
  for (const NamedParameter& p : model.named_parameters()) names.push_back(p.name);
  std::vector<std::string> expected = {"wte.weight", "wpe.weight"};
  for (std::string block : {"h.0.", "h.1."}) {
    for (std::string p : {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
                          "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                          "mlp.c_proj.weight", "mlp.c_proj.bias"}) {
      expected.push_back(block + p);
    }
  }
  expected.push_back("ln_f.weight");
  expected.push_back("ln_f.bias");
  EXPECT_EQ(names, expected);
  EXPECT_EQ(model.named_parameters()[4].variable.name(), "h.0.attn.c_attn.weight");  // Variables carry full names
}

TEST(Gpt, ParameterCountMatchesTheFormula) {
  // V C + T C (embeddings, the head is tied) + L (12 C^2 + 13 C) (blocks) + 2 C (ln_f)
  for (int64_t C : {8, 16}) {
    GptConfig cfg = tiny_config();
    cfg.n_embd = C;
    Gpt model(cfg);
    int64_t V = cfg.vocab_size, T = cfg.block_size, L = cfg.n_layer;
    EXPECT_EQ(model.parameter_count(), V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C);
  }
}

TEST(Gpt, InitializationFollowsGpt2AndTheCounterRng) {
  GptConfig cfg = tiny_config();
  cfg.n_embd = 64, cfg.n_head = 4, cfg.n_layer = 4;
  Gpt model(cfg);
  for (const NamedParameter& p : model.named_parameters()) {
    std::vector<float> v = p.variable.data().to_vector<float>();
    double sum = 0, squares = 0;
    for (float x : v) sum += x, squares += double(x) * x;
    double mean = sum / double(v.size()), std = std::sqrt(squares / double(v.size()) - mean * mean);
    if (p.name.find("ln_") != std::string::npos && p.name.find(".weight") != std::string::npos) {
      EXPECT_EQ(mean, 1.0) << p.name;
    } else if (p.name.find(".bias") != std::string::npos) {
      EXPECT_EQ(squares, 0.0) << p.name;
    } else if (p.name.find("c_proj.weight") != std::string::npos) {
      EXPECT_NEAR(std, 0.02 / std::sqrt(8.0), 0.0015) << p.name;  // scaled by 1/sqrt(2L)
    } else {
      EXPECT_NEAR(std, 0.02, 0.0015) << p.name;
    }
  }
  // Each weight is exactly the counter-RNG fill under its full name.
  Tensor expected = Tensor::empty({3 * 64, 64});
  fill_normal_(expected, cfg.seed, "h.2.attn.c_attn.weight", 0.0, 0.02);
  EXPECT_EQ(model.named_parameters()[2 + 2 * 12 + 2].variable.data().to_vector<float>(), expected.to_vector<float>());
}

TEST(Gpt, LossAtInitializationIsNearUniform) {
  Gpt model(tiny_config());
  Tensor x = ids({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1}, {2, 6}), y = ids({2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1, 2}, {2, 6});
  Variable logits = model(x);
  EXPECT_EQ(logits.shape(), (Shape{2, 6, 11}));
  EXPECT_NEAR(model.loss(x, y).data().item(), std::log(11.0), 0.05);
}

// Token by token with the keys and values kept (a KV cache): the first
// call runs the prompt, each later one a token, and every call gives the
// logits the whole sequence's forward gives at its last position.
TEST(Gpt, ExtendingACacheGivesTheWholeForwardsLogits) {
  GptConfig cfg = tiny_config();
  Gpt model(cfg);
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1, 5, 9, 3, 2};  // two sequences of 8
  auto sequences = [&](int64_t from, int64_t to) {  // tokens [from, to) of both
    std::vector<int32_t> out;
    for (int64_t b = 0; b < 2; ++b) out.insert(out.end(), tokens.begin() + b * 8 + from, tokens.begin() + b * 8 + to);
    return ids(out, {2, to - from});
  };
  KvCache cache;
  for (int64_t end = 3; end <= 8; ++end) {
    const Tensor got = model.extend(end == 3 ? sequences(0, 3) : sequences(end - 1, end), cache);
    EXPECT_EQ(cache.length, end);
    ASSERT_EQ(got.shape(), (Shape{2, 11}));
    // The whole forward's logits (2, end, 11), at position end - 1.
    const std::vector<float> g = got.to_vector<float>(),
                             want = model(sequences(0, end)).data().slice(1, end - 1, end).contiguous().to_vector<float>();
    ASSERT_EQ(g.size(), want.size());
    for (size_t i = 0; i < g.size(); ++i) {
      EXPECT_NEAR(g[i], want[i], 1e-5f * (1.0f + std::fabs(want[i]))) << "after " << end << " tokens, logit " << i;
    }
  }
  // Full: a ninth token would pass the context (8).
  EXPECT_THROW(model.extend(sequences(7, 8), cache), Error);
  // After the first call, one token at a time.
  KvCache other;
  model.extend(sequences(0, 2), other);
  EXPECT_THROW(model.extend(sequences(2, 4), other), Error);
  // A cache of two sequences is not one of one.
  EXPECT_THROW(model.extend(ids({1}, {1, 1}), other), Error);
}

TEST(Gpt, TheTiedHeadAndEmbeddingShareOneParameter) {
  Gpt model(tiny_config());
  Tensor x = ids({1, 2, 3}, {1, 3}), y = ids({2, 3, 4}, {1, 3});
  model.loss(x, y).backward();
  Tensor grad = model.named_parameters()[0].variable.grad();  // wte.weight
  // Row 9 never appears as an input, so only the LM head (softmax over all
  // tokens) gives it gradient; without the tie it would be zero.
  EXPECT_GT(squared_norm(grad.slice(0, 9, 10)).item(), 0.0);
}

// Under mixed precision every one of the GPT's parameters, the tied wte
// included, gets its gradient computed straight into its f32 buffer
// (claim_leaf_grad): with bf16 parameters and stale NaN-filled buffers (as
// ZeRO gives them), every buffer is written, matches the gradient the model
// gets without buffers (16-bit, through the engine), and holds values that
// are not all bf16: none of them went through a 16-bit gradient and a cast.
TEST(Gpt, EveryParameterGradientGoesStraightIntoItsF32Buffer) {
  Gpt model(tiny_config()), plain(tiny_config());
  std::vector<Tensor> buffers;
  for (Gpt* m : {&model, &plain}) {
    for (const NamedParameter& p : m->named_parameters()) {
      Variable v = p.variable;
      v.retype(v.data().to(DType::bf16));
      if (m != &model) continue;
      buffers.push_back(Tensor::full(v.shape(), std::nan("")));
      v.set_stale_grad(buffers.back());
    }
  }
  Tensor x = ids({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1}, {2, 6}), y = ids({2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1, 2}, {2, 6});
  model.loss(x, y).backward();
  plain.loss(x, y).backward();
  const std::vector<NamedParameter> plain_parameters = plain.named_parameters();  // a vector by value: held
  for (size_t i = 0; i < buffers.size(); ++i) {
    const NamedParameter& p = plain_parameters[i];
    const std::vector<float> got = buffers[i].to_vector<float>(), want = p.variable.grad().to_vector<float>();
    EXPECT_TRUE(test::all_close(got, want, 5e-2, 1e-3)) << p.name;
    EXPECT_NE(got, buffers[i].to(DType::bf16).to_vector<float>()) << p.name << ": every element a bf16 value";
  }
}

// Activation checkpointing (autograd/checkpoint.h) runs each block again in
// backward: the same loss and every gradient to the bit, in f32 and in bf16,
// with fewer activations kept (a bigger model than tiny_config, so that the
// blocks' activations dominate the peak).
TEST(Gpt, CheckpointedBlocksGiveTheSameGradientsWithLessMemory) {
  GptConfig cfg = tiny_config();
  cfg.n_layer = 4, cfg.block_size = 32, cfg.n_embd = 32, cfg.n_head = 4;
  std::vector<int32_t> tokens(2 * 32);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t((i * 7 + 3) % 11);
  std::vector<int32_t> next(tokens.begin() + 1, tokens.end());
  next.push_back(0);
  const Tensor x = ids(tokens, {2, 32}), y = ids(next, {2, 32});
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(std::string(dtype_name(dtype)));
    std::vector<std::vector<float>> grads[2];
    float losses[2] = {0, 0};
    int64_t peaks[2] = {0, 0};
    for (int checkpointed = 0; checkpointed < 2; ++checkpointed) {
      Gpt model(cfg);
      for (const NamedParameter& p : model.named_parameters()) {
        Variable v = p.variable;
        if (dtype != DType::f32) v.retype(v.data().to(dtype));
      }
      model.checkpoint_activations(checkpointed == 1);
      reset_peak_memory(Device::cpu());
      const int64_t before = memory_stats(Device::cpu())[MemoryCategory::activation].live;
      Variable loss = model.loss(x, y);
      losses[checkpointed] = float(loss.data().item());
      loss.backward();
      peaks[checkpointed] = memory_stats(Device::cpu())[MemoryCategory::activation].peak - before;
      for (const NamedParameter& p : model.named_parameters()) {
        grads[checkpointed].push_back(p.variable.grad().to(DType::f32).to_vector<float>());
      }
    }
    EXPECT_EQ(losses[1], losses[0]);
    ASSERT_EQ(grads[1].size(), grads[0].size());
    for (size_t i = 0; i < grads[0].size(); ++i) EXPECT_EQ(grads[1][i], grads[0][i]) << "parameter " << i;
    EXPECT_LT(peaks[1], peaks[0] * 3 / 4) << "checkpointed " << peaks[1] << " bytes against " << peaks[0];
  }
}

TEST(Gpt, BadInputsAreClearErrors) {
  Gpt model(tiny_config());
  EXPECT_THROW(model(ids(std::vector<int32_t>(9, 0), {1, 9})), Error);  // longer than the context
  EXPECT_THROW(model(ids({0, 1}, {2})), Error);                          // not (B, T)
  EXPECT_THROW(model(ids({0, 11}, {1, 2})), Error);                      // id outside the vocabulary
  GptConfig bad = tiny_config();
  bad.n_head = 3;
  EXPECT_THROW(Gpt{bad}, Error);
}

TEST(Gpt, OverfitsOneBatch) {
  Gpt model(tiny_config());
  Tensor x = ids({1, 2, 3, 4, 5, 6, 7, 8}, {1, 8}), y = ids({2, 3, 4, 5, 6, 7, 8, 9}, {1, 8});
  AdamW optimizer({{model.parameters(), 0.0}}, {.lr = 1e-2});
  double first = 0, last = 0;
  for (int step = 0; step < 150; ++step) {
    Variable loss = model.loss(x, y);
    if (step == 0) first = loss.data().item();
    last = loss.data().item();
    loss.backward();
    optimizer.step();
    optimizer.zero_grad();
  }
  EXPECT_GT(first, 2.0);
  EXPECT_LT(last, 0.05);
}

TEST(Module, RegistrationRefusesDuplicateNamesAndDescribesParameters) {
  Gpt model(tiny_config());
  std::string text = model.describe();
  EXPECT_NE(text.find("h.1.mlp.c_fc.weight f32[32, 8]"), std::string::npos) << text;
  struct Twice : Module {
    Twice() {
      param("w", {1}, ParamInit::zeros());
      param("w", {1}, ParamInit::zeros());
    }
  };
  EXPECT_THROW(Twice{}, Error);
  model.eval();
  EXPECT_FALSE(model.is_training());
}

}  // namespace
}  // namespace sg

namespace sg {
namespace {

// ParametersOn picks where Module::param() creates parameters (the CPU
// unless one is alive), nests, and restores the previous device.
TEST(ParametersOn, ChoosesTheDeviceOfNewParametersAndNests) {
  EXPECT_TRUE(ParametersOn::current().is_cpu());
  {
    ParametersOn outer(Device::cuda(1));
    EXPECT_EQ(ParametersOn::current(), Device::cuda(1));
    {
      ParametersOn inner(Device::cpu());
      EXPECT_TRUE(ParametersOn::current().is_cpu());
      GptConfig cfg;
      cfg.vocab_size = 5, cfg.block_size = 4, cfg.n_layer = 1, cfg.n_head = 1, cfg.n_embd = 4;
      Gpt model(cfg);  // built under the inner guard: on the CPU
      for (const NamedParameter& p : model.named_parameters()) EXPECT_TRUE(p.variable.data().device().is_cpu());
    }
    EXPECT_EQ(ParametersOn::current(), Device::cuda(1));
  }
  EXPECT_TRUE(ParametersOn::current().is_cpu());
}

}  // namespace
}  // namespace sg
