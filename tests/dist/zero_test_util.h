// Shared by the ZeRO tests: a small GPT, a fixed global batch that every
// world size 1-4 divides, the one-process reference run, the same run
// through ZeroOptimizer on this rank's slice of each batch, and the check
// that holds the two to each other.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <optional>
#include <tuple>

#include "autograd/functions.h"
#include "dist/world.h"
#include "examples/zero_parameters.h"
#include "nn/gpt.h"
#include "optim/zero.h"
#include "tensor/rng.h"
#include "tests/test_util.h"

namespace sg::zero_test {

// A fresh directory, the same on every rank (named by rank 0's process id,
// so test programs running side by side never share one).
inline std::string fresh_dir(const std::string& name) {
  Tensor pid = Tensor::full({1}, double(::getpid()), TensorOptions().dtype(DType::i64));
  world().broadcast(pid, 0)->wait();
  const std::string dir = ::testing::TempDir() + "/sg-checkpoint-" + std::to_string(int64_t(pid.item())) + "-" + name;
  if (world().rank() == 0) std::filesystem::remove_all(dir);
  world().barrier()->wait();
  return dir;
}
constexpr int64_t kGlobalBatch = 12, kSteps = 10, kAccum = 2;
constexpr double kClip = 0.5, kLr = 3e-3, kWeightDecay = 0.1;

inline GptConfig config() {
  GptConfig cfg;
  cfg.vocab_size = 13, cfg.block_size = 8, cfg.n_layer = 2, cfg.n_head = 2, cfg.n_embd = 16, cfg.seed = 5;
  return cfg;
}

// Rows [first, first + rows) of micro-batch `micro` of step `step`: (x, y).
// Each row counts up in steps of 5 (mod V) from a random start: a rule the
// model can learn, so the loss falls.
inline std::pair<Tensor, Tensor> batch(int64_t step, int64_t micro, int64_t first, int64_t rows) {
  const int64_t T = config().block_size, V = config().vocab_size;
  Tensor starts = Tensor::empty({kGlobalBatch});
  fill_uniform_(starts, uint64_t(step * kAccum + micro), "zero-test-starts", 0.0, double(V));
  std::vector<float> start = starts.to_vector<float>();
  std::vector<int32_t> tokens;
  for (int64_t row = 0; row < kGlobalBatch; ++row)
    for (int64_t t = 0; t <= T; ++t) tokens.push_back(int32_t((int64_t(start[size_t(row)]) + 5 * t) % V));
  Tensor ids = Tensor::from_vector(tokens, {kGlobalBatch, T + 1}).slice(0, first, first + rows);
  return {ids.slice(1, 0, T).contiguous(), ids.slice(1, 1, T + 1).contiguous()};
}

struct TrainingRun {
  std::vector<float> losses;
  std::vector<std::vector<float>> params;
};

inline std::vector<std::vector<float>> values_of(const Gpt& model) {
  std::vector<std::vector<float>> values;
  for (const NamedParameter& p : model.named_parameters()) values.push_back(p.variable.data().to_vector<float>());
  return values;
}

// One process, the whole global batch, plain AdamW.
inline TrainingRun reference_run() {
  Gpt model(config());
  ParamGroup decayed{{}, kWeightDecay}, other{{}, 0.0};
  for (const NamedParameter& p : model.named_parameters()) (p.init.decays ? decayed : other).params.push_back(p.variable);
  AdamW adam({decayed, other}, {.lr = kLr});
  TrainingRun run;
  for (int64_t step = 0; step < kSteps; ++step) {
    double loss = 0;
    for (int64_t micro = 0; micro < kAccum; ++micro) {
      auto [x, y] = batch(step, micro, 0, kGlobalBatch);
      Variable l = model.loss(x, y);
      scale(l, 1.0 / kAccum).backward();
      loss += l.data().item() / kAccum;
    }
    clip_grad_norm(model.parameters(), kClip);
    adam.step();
    adam.zero_grad();
    run.losses.push_back(float(loss));
  }
  run.params = values_of(model);
  return run;
}

// A model and its ZeRO optimizer (stage 3 optionally born partitioned: the
// model built under DeferredParameters); `knobs` sets the options beyond
// stage, learning rate and weight decay.
// On `device`: parameters, batches and every collective (CUDA tensors of
// ranks sharing one GPU travel through the staged MPI backend).
struct ZeroTrainer {
  // comm: the communicator the optimizer and the batch split use (the
  // world's by default).
  ZeroTrainer(int stage, bool born_partitioned = false, ZeroOptions knobs = {}, Device on = Device::cpu(),
              Communicator* comm = nullptr)
      : device(on),
        comm(comm ? *comm : world()),
        model(build(born_partitioned, on)),
        zero(zero_parameters(model, config().seed), this->comm, with(knobs, stage)) {}
  static Gpt build(bool born_partitioned, Device on) {
    std::optional<DeferredParameters> deferred;
    if (born_partitioned) deferred.emplace();
    ParametersOn placed(on);
    return Gpt(config());
  }
  static ZeroOptions with(ZeroOptions knobs, int stage) {
    knobs.stage = stage, knobs.adam = {.lr = kLr}, knobs.weight_decay = kWeightDecay;
    return knobs;
  }
  // Steps [from, to), every rank on its slice of the global batch; the
  // per-step losses (averaged over ranks: the global batch's).
  std::vector<float> train(int64_t from, int64_t to) {
    const int64_t rows = kGlobalBatch / comm.world_size(), first = comm.rank() * rows;
    std::vector<float> losses;
    for (int64_t step = from; step < to; ++step) {
      double loss = 0;
      for (int64_t micro = 0; micro < kAccum; ++micro) {
        auto [x, y] = batch(step, micro, first, rows);
        Variable l = model.loss(x.to(device), y.to(device));
        zero.backward(scale(l, 1.0 / kAccum), micro == kAccum - 1);
        loss += l.data().item() / kAccum;
      }
      zero.clip_grad_norm(kClip);
      zero.step(kLr);
      zero.zero_grad();
      Tensor mean = Tensor::full({1}, loss);  // every rank's micro-batch loss, averaged
      comm.all_reduce(mean, ReduceOp::average)->wait();
      losses.push_back(float(mean.item()));
    }
    return losses;
  }
  // Every parameter's values in the model's order (stage 3 holds only
  // slices: gathers them; a collective).
  std::vector<std::vector<float>> parameters() {
    std::map<std::string, Tensor> full;
    for (auto& [name, value] : zero.full_parameters()) full[name] = value;
    std::vector<std::vector<float>> values;
    for (const NamedParameter& p : model.named_parameters()) values.push_back(full.at(p.name).to_vector<float>());
    return values;
  }
  Device device;
  Communicator& comm;
  Gpt model;  // declared before the optimizer: built before it packs the parameters
  ZeroOptimizer zero;
};

inline TrainingRun zero_run(int stage, bool born_partitioned = false, ZeroOptions knobs = {},
                            Device device = Device::cpu(), Communicator* comm = nullptr) {
  ZeroTrainer trainer(stage, born_partitioned, knobs, device, comm);
  TrainingRun run;
  run.losses = trainer.train(0, kSteps);
  run.params = trainer.parameters();
  return run;
}

inline const TrainingRun& reference() {
  static TrainingRun run = reference_run();
  return run;
}

// A model and its ZeRO optimizer at `stage`, and this rank's share of the
// first micro-batch: the setup of the single-step tests below.
struct OneStepSetup {
  explicit OneStepSetup(int stage, ZeroOptions knobs = {})
      : zero(zero_parameters(model, config().seed), world(), with_stage(knobs, stage)) {
    const int64_t rows = kGlobalBatch / world().world_size();
    std::tie(x, y) = batch(0, 0, world().rank() * rows, rows);
  }
  static ZeroOptions with_stage(ZeroOptions knobs, int stage) {
    knobs.stage = stage, knobs.adam = {.lr = kLr};
    return knobs;
  }
  Gpt model{config()};  // declared first: built before the optimizer packs its parameters
  ZeroOptimizer zero;
  Tensor x, y;
};

class ZeroEquivalence : public ::testing::TestWithParam<int> {
 public:
  // Losses and parameters of `run` against `expected` (the one-process run),
  // relative `tolerance` (1e-5 on the CPU; CUDA's f32 sums in other orders).
  static void check(const TrainingRun& run, const TrainingRun& expected, int stage, double tolerance = 1e-5);
};

inline void ZeroEquivalence::check(const TrainingRun& run, const TrainingRun& expected, int stage, double tolerance) {
  EXPECT_TRUE(test::all_close(run.losses, expected.losses, tolerance)) << "stage " << stage << " on "
                                                                     << world().world_size() << " ranks";
  ASSERT_EQ(run.params.size(), expected.params.size());
  // Every element within 1e-5 relative, with one principled exception. The
  // key part of attn.c_attn.bias adds q.b_k to every score of a query's row,
  // which the softmax cancels: its true gradient is exactly zero, so what
  // autograd computes there is rounding noise, and Adam's m / sqrt(v) turns
  // noise of any size into steps of up to lr. Those elements differ between
  // any two summation orders (also between two one-process implementations),
  // so they are held only to lr * steps.
  const int64_t C = config().n_embd;
  std::vector<NamedParameter> names = Gpt(config()).named_parameters();
  for (size_t i = 0; i < run.params.size(); ++i) {
    std::vector<float> got = run.params[i], want = expected.params[i];
    if (names[i].name.find("attn.c_attn.bias") != std::string::npos) {
      for (int64_t j = C; j < 2 * C; ++j) {
        EXPECT_NEAR(got[size_t(j)], want[size_t(j)], kLr * kSteps) << names[i].name << "[" << j << "]";
        got[size_t(j)] = want[size_t(j)];
      }
    }
    // Relative tolerance, with the tensor's own scale as the floor for elements near zero.
    double scale = 0;
    for (float v : want) scale = std::max(scale, double(std::abs(v)));
    EXPECT_TRUE(test::all_close(got, want, tolerance, tolerance * scale)) << names[i].name << " (stage " << stage << ")";
  }
  // The run really trained: the loss fell.
  EXPECT_LT(run.losses.back(), run.losses.front() - 0.1);
}

}  // namespace sg::zero_test
