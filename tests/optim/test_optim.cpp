// Optimizers, schedule and clipping against their formulas, and gradient
// accumulation against one big batch.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/functions.h"
#include "nn/gpt.h"
#include "optim/optimizers.h"
#include "optim/schedule.h"
#include "tensor/ops.h"

namespace sg {
namespace {

Variable parameter(std::vector<float> values) {
  int64_t n = int64_t(values.size());
  return Variable(Tensor::from_vector(values, {n}), /*requires_grad=*/true);
}

TEST(AdamW, DecaysOnlyItsDecayedGroup) {
  Variable decayed = parameter({1.0f, -2.0f}), plain = parameter({1.0f, -2.0f});
  AdamW optimizer({{{decayed}, 0.5}, {{plain}, 0.0}}, {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8});
  for (int step = 1; step <= 2; ++step) {
    decayed.set_grad(Tensor::from_vector(std::vector<float>{0.5f, 0.5f}, {2}));
    plain.set_grad(Tensor::from_vector(std::vector<float>{0.5f, 0.5f}, {2}));
    optimizer.step();
  }
  // With a constant gradient m_hat / sqrt(v_hat) = 1 each step: p -= lr * (1 + wd p) per step (decay first).
  double p = 1.0;
  for (int step = 0; step < 2; ++step) p = p - 0.1 * 0.5 * p - 0.1;
  EXPECT_NEAR(decayed.data().at({0}), p, 1e-6);
  EXPECT_NEAR(plain.data().at({0}), 1.0 - 0.2, 1e-6);
  EXPECT_EQ(optimizer.steps_taken(), 2);
}

// PyTorch's checks: what would turn the parameters into NaN or make the
// moments grow without bound is refused when the optimizer is made.
TEST(AdamW, RefusesHyperparametersThatCannotTrain) {
  auto make = [](AdamW::Options options, double decay = 0.0) { AdamW({{{parameter({1.0f})}, decay}}, options); };
  EXPECT_NO_THROW(make({.lr = 0.0, .beta1 = 0.0, .beta2 = 0.0, .eps = 0.0}));
  EXPECT_THROW(make({.lr = -1e-3}), Error);
  EXPECT_THROW(make({.lr = std::nan("")}), Error);
  EXPECT_THROW(make({.lr = INFINITY}), Error);
  EXPECT_THROW(make({.beta1 = 1.0}), Error);
  EXPECT_THROW(make({.beta1 = -0.1}), Error);
  EXPECT_THROW(make({.beta2 = 1.5}), Error);
  EXPECT_THROW(make({.beta2 = std::nan("")}), Error);
  EXPECT_THROW(make({.eps = -1e-8}), Error);
  EXPECT_THROW(make({}, -0.1), Error);  // a negative weight decay
  try {
    make({.beta2 = 1.5});
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("beta2 must be in [0, 1), got 1.5"), std::string::npos) << error.what();
  }
  AdamW adam({{{parameter({1.0f})}, 0.0}}, {});
  EXPECT_THROW(adam.set_lr(std::nan("")), Error);
  adam.set_lr(0.5);
  EXPECT_EQ(adam.lr(), 0.5);
  EXPECT_THROW(Sgd({{{parameter({1.0f})}, 0.0}}, {.lr = 0.1, .momentum = 1.0}), Error);
  EXPECT_THROW(Sgd({{{parameter({1.0f})}, 0.0}}, {.lr = -0.1}), Error);
}

TEST(AdamW, SkipsParametersWithoutGradientsAndCountsItsState) {
  Variable a = parameter({1.0f}), b = parameter(std::vector<float>(10, 1.0f));
  int64_t before = memory_stats(Device::cpu())[MemoryCategory::optimizer_state].live;
  AdamW optimizer({{{a, b}, 0.0}}, {});
  a.set_grad(Tensor::ones({1}));
  optimizer.step();
  EXPECT_EQ(b.data().at({0}), 1.0);  // untouched
  EXPECT_EQ(memory_stats(Device::cpu())[MemoryCategory::optimizer_state].live - before, 2 * 4);  // m and v of a only
}

// Each parameter counts its own steps, as PyTorch's AdamW does: one that
// first gets a gradient at the optimizer's third step is bias-corrected as
// at its first, exactly like a fresh optimizer's first step.
TEST(AdamW, EachParameterCountsItsOwnSteps) {
  Variable a = parameter({1.0f, -2.0f}), late = parameter({3.0f, 0.5f}), fresh = parameter({3.0f, 0.5f});
  const AdamW::Options options{.lr = 0.1, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8};
  AdamW optimizer({{{a, late}, 0.1}}, options), first_step({{{fresh}, 0.1}}, options);
  const Tensor grad = Tensor::from_vector(std::vector<float>{0.5f, -0.25f}, {2});
  for (int step = 1; step <= 3; ++step) {
    a.set_grad(grad);
    if (step == 3) late.set_grad(grad);
    optimizer.step();
  }
  fresh.set_grad(grad);
  first_step.step();
  EXPECT_EQ(optimizer.steps_taken(), 3);
  EXPECT_EQ(optimizer.updates(0, 0), 3);
  EXPECT_EQ(optimizer.updates(0, 1), 1);
  EXPECT_EQ(late.data().to_vector<float>(), fresh.data().to_vector<float>());
}

// Update ranges (how ZeRO's flat groups leave a parameter without gradient
// alone): the elements inside train exactly as parameters of their own
// would, 16-bit copy included; those outside keep values, moments and copy.
TEST(AdamW, UpdateRangesTrainOnlyTheirElements) {
  std::vector<float> values{1, -2, 3, -4, 5, -6, 7, -8, 9, -10};
  Variable flat = parameter(values);
  Variable head = parameter({1, -2, 3}), tail = parameter({7, -8, 9, -10});
  const AdamW::Options options{.lr = 0.1, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8};
  AdamW ranged({{{flat}, 0.5}}, options), separate({{{head, tail}, 0.5}}, options);
  Tensor copy = flat.data().to(DType::bf16);
  ranged.set_low_precision_copy(0, 0, copy);
  for (int step = 1; step <= 3; ++step) {
    ranged.set_update_ranges(0, 0, {{0, 3, step}, {6, 10, step}});
    std::vector<float> grad{0.5f, -1, 2, 9, 9, 9, 0.25f, -0.5f, 1, 3};
    flat.set_grad(Tensor::from_vector(grad, {10}));
    head.set_grad(Tensor::from_vector(std::vector<float>(grad.begin(), grad.begin() + 3), {3}));
    tail.set_grad(Tensor::from_vector(std::vector<float>(grad.begin() + 6, grad.end()), {4}));
    ranged.step(), separate.step();
  }
  std::vector<float> got = flat.data().to_vector<float>(), want = head.data().to_vector<float>();
  want.insert(want.end(), values.begin() + 3, values.begin() + 6);  // untouched
  for (float v : tail.data().to_vector<float>()) want.push_back(v);
  EXPECT_EQ(got, want);
  EXPECT_EQ(copy.to(DType::f32).to_vector<float>(), flat.data().to(DType::bf16).to(DType::f32).to_vector<float>());
  std::vector<float> m = ranged.exp_avg(0, 0).to_vector<float>();
  EXPECT_EQ(std::vector<float>(m.begin() + 3, m.begin() + 6), std::vector<float>(3, 0.0f));
  EXPECT_THROW(ranged.set_update_ranges(0, 0, {{8, 11, 1}}), Error);  // past the end
  EXPECT_THROW(ranged.set_update_ranges(0, 0, {{0, 1, 0}}), Error);   // steps count from 1
  Variable matrix(Tensor::ones({2, 2}), /*requires_grad=*/true);
  AdamW two_d({{{matrix}, 0.0}}, options);
  EXPECT_THROW(two_d.set_update_ranges(0, 0, {{0, 1, 1}}), Error);  // ranges of a 1-D parameter only
}

TEST(Sgd, MomentumFollowsPyTorch) {
  Variable p = parameter({1.0f});
  Sgd optimizer({{{p}, 0.1}}, {.lr = 0.5, .momentum = 0.9});
  double value = 1.0, buffer = 0.0;
  for (int step = 0; step < 3; ++step) {
    p.set_grad(Tensor::from_vector(std::vector<float>{2.0f}, {1}));
    optimizer.step();
    double g = 2.0 + 0.1 * value;
    buffer = step == 0 ? g : 0.9 * buffer + g;
    value -= 0.5 * buffer;
  }
  EXPECT_NEAR(p.data().item(), value, 1e-5);
}

TEST(Schedule, WarmupThenCosineToTheFloor) {
  WarmupCosine s{1.0, 0.1, 10, 110};
  EXPECT_NEAR(s.lr(0), 0.1, 1e-12);
  EXPECT_NEAR(s.lr(9), 1.0, 1e-12);
  EXPECT_NEAR(s.lr(10), 1.0, 1e-12);
  EXPECT_NEAR(s.lr(60), 0.55, 1e-12);  // halfway: the mean of max and min
  EXPECT_NEAR(s.lr(110), 0.1, 1e-12);
  EXPECT_NEAR(s.lr(500), 0.1, 1e-12);
}

// DeepSpeed's three schedules, against values from a transcription of
// deepspeed/runtime/lr_schedules.py (WarmupLR, WarmupDecayLR,
// WarmupCosineLR): log and linear warmup, iteration -1 before the first
// advance, W = max(2, warmup), the cosine clamped at its end.
TEST(Schedule, DeepSpeedsSchedulesGiveDeepSpeedsLearningRates) {
  using Kind = DeepSpeedSchedule::Kind;
  DeepSpeedSchedule warmup{.kind = Kind::warmup, .min_lr = 0.01, .max_lr = 1.0, .warmup_steps = 10};
  EXPECT_DOUBLE_EQ(warmup.lr(-1), 0.01);
  EXPECT_DOUBLE_EQ(warmup.lr(0), 0.01);
  EXPECT_NEAR(warmup.lr(1), 0.30801969570734133, 1e-15);  // 0.01 + 0.99 log 2 / log 10
  EXPECT_NEAR(warmup.lr(5), 0.7803697378798071, 1e-15);
  EXPECT_DOUBLE_EQ(warmup.lr(9), 1.0);
  EXPECT_DOUBLE_EQ(warmup.lr(50), 1.0);
  warmup.log_warmup = false;
  EXPECT_NEAR(warmup.lr(1), 0.109, 1e-15);
  EXPECT_NEAR(warmup.lr(9), 0.901, 1e-15);

  const DeepSpeedSchedule decay{
      .kind = Kind::warmup_decay, .min_lr = 0.0, .max_lr = 1.0, .warmup_steps = 10, .total_steps = 110};
  EXPECT_DOUBLE_EQ(decay.lr(-1), 0.0);
  EXPECT_NEAR(decay.lr(4), 0.6989700043360187, 1e-15);  // log 5 / log 10
  EXPECT_DOUBLE_EQ(decay.lr(10), 1.0);
  EXPECT_DOUBLE_EQ(decay.lr(60), 0.5);
  EXPECT_DOUBLE_EQ(decay.lr(110), 0.0);
  EXPECT_DOUBLE_EQ(decay.lr(200), 0.0);

  DeepSpeedSchedule cosine{.kind = Kind::warmup_cosine, .max_lr = 2.0, .warmup_steps = 10, .total_steps = 110};
  EXPECT_DOUBLE_EQ(cosine.lr(-1), 0.0);  // DeepSpeed's first step: lr 0
  EXPECT_DOUBLE_EQ(cosine.lr(0), 0.0);   // log 1 = 0
  EXPECT_NEAR(cosine.lr(3), 1.2041199826559246, 1e-15);
  EXPECT_NEAR(cosine.lr(10), 1.999506609709695, 1e-15);
  EXPECT_NEAR(cosine.lr(59), 1.0001, 1e-12);  // halfway: between 2 and the floor, 2 x 1e-4
  EXPECT_NEAR(cosine.lr(110), 0.0002, 1e-15);
  EXPECT_NEAR(cosine.lr(500), 0.0002, 1e-15);
  cosine.log_warmup = false, cosine.warmup_min_ratio = 0.1, cosine.cos_min_ratio = 0.05;
  EXPECT_NEAR(cosine.lr(0), 0.2, 1e-15);
  EXPECT_NEAR(cosine.lr(3), 0.74, 1e-15);
  EXPECT_NEAR(cosine.lr(59), 1.05, 1e-12);
  EXPECT_NEAR(cosine.lr(60), 1.0201597788757781, 1e-12);
  EXPECT_NEAR(cosine.lr(109), 0.1, 1e-15);
}

TEST(Clipping, ScalesTheGlobalNormDownOnly) {
  Variable a = parameter({0.0f, 0.0f}), b = parameter({0.0f});
  a.set_grad(Tensor::from_vector(std::vector<float>{3.0f, 0.0f}, {2}));
  b.set_grad(Tensor::from_vector(std::vector<float>{4.0f}, {1}));
  EXPECT_NEAR(clip_grad_norm({a, b}, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(grad_norm({a, b}), 1.0, 1e-5);
  EXPECT_NEAR(b.grad().item(), 0.8, 1e-5);
  EXPECT_NEAR(clip_grad_norm({a, b}, 10.0), 1.0, 1e-5);  // below the limit: unchanged
  EXPECT_NEAR(b.grad().item(), 0.8, 1e-5);
  EXPECT_THROW(clip_grad_norm({a}, 0.0), Error);
}

// ZeroOptimizer's factor (kernels/adamw_math.h): norm 5 clipped to 1, to
// 10 unchanged; fp16's loss scale divided out of both the norm and the
// gradients; an overflow leaves 1; max_norm 0 only unscales.
TEST(Clipping, TheFactorAdamWMultipliesBy) {
  EXPECT_DOUBLE_EQ(clip_grad_factor(25.0, 1.0, 1.0), 1.0 / (5.0 + 1e-6));
  EXPECT_DOUBLE_EQ(clip_grad_factor(25.0, 1.0, 10.0), 1.0);
  EXPECT_DOUBLE_EQ(clip_grad_factor(25.0 * 1024 * 1024, 1024.0, 1.0), 1.0 / (5.0 + 1e-6) / 1024.0);
  EXPECT_DOUBLE_EQ(clip_grad_factor(25.0 * 1024 * 1024, 1024.0, 0.0), 1.0 / 1024.0);
  EXPECT_EQ(clip_grad_factor(INFINITY, 1024.0, 1.0), 1.0);
  EXPECT_EQ(clip_grad_factor(NAN, 1.0, 1.0), 1.0);
  // The op: the same bits in f32, from a sum of squares on its device.
  const Tensor squares = Tensor::from_vector(std::vector<float>{25.0f}, {});
  EXPECT_EQ(clip_grad_factor(squares, 1.0).item(), double(float(1.0 / (5.0 + 1e-6))));
  const Tensor scaled = Tensor::from_vector(std::vector<float>{25.0f * 1024 * 1024}, {});
  EXPECT_EQ(clip_grad_factor(scaled, 1.0, 1024.0).item(), double(float(1.0 / (5.0 + 1e-6) / 1024.0)));
}

// fp16 on a GPU: an overflow gives NaN, which AdamW takes as "skip this
// step"; anything else the same factor. f32's largest squares are no
// overflow; their norm is finite.
TEST(Clipping, AnOverflowSkipsWhenAsked) {
  EXPECT_TRUE(gradients_overflowed(INFINITY, 1.0));
  EXPECT_TRUE(gradients_overflowed(NAN, 65536.0));
  EXPECT_FALSE(gradients_overflowed(3.4e38, 65536.0));
  EXPECT_TRUE(std::isnan(clip_grad_factor_or_skip(INFINITY, 1024.0, 1.0)));
  EXPECT_TRUE(std::isnan(clip_grad_factor_or_skip(NAN, 1024.0, 0.0)));
  EXPECT_EQ(clip_grad_factor_or_skip(25.0 * 1024 * 1024, 1024.0, 1.0), clip_grad_factor(25.0 * 1024 * 1024, 1024.0, 1.0));
  EXPECT_TRUE(AdamWParams::skips(std::nanf("")));
  EXPECT_FALSE(AdamWParams::skips(INFINITY));
  const Tensor inf = Tensor::from_vector(std::vector<float>{INFINITY}, {});
  EXPECT_TRUE(std::isnan(clip_grad_factor(inf, 1.0, 1024.0, /*skip_on_overflow=*/true).item()));
  EXPECT_EQ(clip_grad_factor(inf, 1.0, 1024.0).item(), 1.0);
}

// A scale AdamW reads from a tensor (the device's, in ZeroOptimizer on a
// GPU) updates as the same scale given by value.
TEST(AdamW, ReadsItsGradientScaleFromATensor) {
  Variable a = parameter({1.0f, -2.0f}), b = parameter({1.0f, -2.0f});
  for (Variable* p : {&a, &b}) p->set_grad(Tensor::from_vector(std::vector<float>{0.5f, 3.0f}, {2}));
  AdamW by_value({{{a}, 0.1}}, {.lr = 0.1}), by_tensor({{{b}, 0.1}}, {.lr = 0.1});
  by_value.set_grad_scale(0.25);
  by_tensor.set_grad_scale(Tensor::from_vector(std::vector<float>{0.25f}, {}));
  by_value.step(), by_tensor.step();
  EXPECT_EQ(a.data().to_vector<float>(), b.data().to_vector<float>());
  by_tensor.set_grad_scale(1.0);  // a value again drops the tensor
  by_value.set_grad_scale(1.0);
  by_value.step(), by_tensor.step();
  EXPECT_EQ(a.data().to_vector<float>(), b.data().to_vector<float>());
  EXPECT_THROW(by_tensor.set_grad_scale(Tensor::from_vector(std::vector<float>{1.0f, 2.0f}, {2})), Error);
  // A NaN scale skips the update: values and moments stay as they were.
  const std::vector<float> before = b.data().to_vector<float>();
  const std::vector<float> m_before = by_tensor.exp_avg(0, 0).to_vector<float>();
  by_tensor.set_grad_scale(Tensor::from_vector(std::vector<float>{std::nanf("")}, {}));
  by_tensor.step();
  EXPECT_EQ(b.data().to_vector<float>(), before);
  EXPECT_EQ(by_tensor.exp_avg(0, 0).to_vector<float>(), m_before);
}

TEST(GradientAccumulation, TwoHalfBatchesEqualOneFullBatch) {
  GptConfig cfg;
  cfg.vocab_size = 9, cfg.block_size = 4, cfg.n_layer = 1, cfg.n_head = 2, cfg.n_embd = 8;
  Gpt full(cfg), accumulated(cfg);
  std::vector<int32_t> xs = {1, 2, 3, 4, 5, 6, 7, 8}, ys = {2, 3, 4, 5, 6, 7, 8, 0};
  full.loss(Tensor::from_vector(xs, {2, 4}), Tensor::from_vector(ys, {2, 4})).backward();
  for (int half = 0; half < 2; ++half) {
    std::vector<int32_t> x(xs.begin() + half * 4, xs.begin() + half * 4 + 4), y(ys.begin() + half * 4, ys.begin() + half * 4 + 4);
    scale(accumulated.loss(Tensor::from_vector(x, {1, 4}), Tensor::from_vector(y, {1, 4})), 0.5).backward();
  }
  auto a = full.named_parameters(), b = accumulated.named_parameters();
  for (size_t i = 0; i < a.size(); ++i) {
    std::vector<float> ga = a[i].variable.grad().to_vector<float>(), gb = b[i].variable.grad().to_vector<float>();
    for (size_t j = 0; j < ga.size(); ++j) ASSERT_NEAR(gb[j], ga[j], 1e-6 + 1e-5 * std::abs(ga[j])) << a[i].name;
  }
}

}  // namespace
}  // namespace sg
