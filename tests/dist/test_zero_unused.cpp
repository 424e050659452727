// Parameters that get no gradient in a step. Plain AdamW leaves such a
// parameter alone: its values, moments and weight decay are untouched (its
// .grad is undefined). ZeRO updates whole flat groups, where such a
// parameter's gradient is zeros; the central invariant asks that it be left
// alone all the same, at every stage and world size, including a
// parameter that one rank's rows use and another's do not.
//
// The model is a small regression with three kinds of parameters:
//   enc.*, head.weight, head.bias   always used
//   side.weight                     read by every rank, in the loss only for
//                                   the rows that take a branch (none, in
//                                   some steps; none on some ranks)
//   head.spare, unused.weight       never used (head.spare shares its group
//                                   with head.bias, so the group is updated
//                                   in part)
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "optim/checkpoint_index.h"
#include "tensor/ops.h"
#include "tests/dist/zero_test_util.h"

namespace sg {
namespace {

constexpr int64_t kRows = 12, kIn = 6, kHidden = 8, kOut = 3, kSteps = 6, kAccum = 2;
constexpr double kLr = 3e-2, kWeightDecay = 0.1, kClip = 0.5;

struct ParamSpec {
  const char* name;
  Shape shape;
  bool decays;
};
const std::vector<ParamSpec> kSpecs = {
    {"enc.weight", {kHidden, kIn}, true}, {"enc.bias", {kHidden}, false},   {"head.weight", {kOut, kHidden}, true},
    {"head.bias", {kOut}, false},         {"head.spare", {kOut}, false},    {"side.weight", {kOut, kIn}, true},
    {"unused.weight", {4, 4}, true},
};

// When the side branch enters the loss: for some rows of some steps
// (stages 0-2), or never (every stage: stage 3 gathers parameters as they
// are read, so every rank must read and reach the same ones).
enum class Branch { data_dependent, never };

std::vector<Variable> initial_parameters(Device device = Device::cpu()) {
  std::vector<Variable> params;
  for (size_t i = 0; i < kSpecs.size(); ++i) {
    Tensor values = Tensor::empty(kSpecs[i].shape);
    fill_uniform_(values, uint64_t(i), "unused-test-init", -0.5, 0.5);
    params.emplace_back(values.to(device), /*requires_grad=*/true, kSpecs[i].name);
  }
  return params;
}

Variable find(const std::vector<Variable>& params, const std::string& name) {
  for (const Variable& p : params)
    if (p.name() == name) return p;
  throw Error("no parameter " + name);
}

bool takes_branch(Branch branch, int64_t step, int64_t micro, int64_t row) {
  // One row of a micro-batch, so one rank of any world takes it: in the
  // first micro-batch of steps 0, 1, 3 and 4, and the second of steps 1 and
  // 4 (the one where stages 0-1 reduce).
  if (branch == Branch::never || step % 3 == 2) return false;
  return micro == 0 ? row == (5 * step) % kRows : step % 3 == 1 && row == (5 * step + 7) % kRows;
}

// The loss of rows [first, first + rows) of micro-batch (step, micro),
// averaged over those rows: over ranks, the average of these is the whole
// batch's. The inputs in the parameters' `dtype`, on their device.
Variable loss_of(const std::vector<Variable>& params, Branch branch, int64_t step, int64_t micro, int64_t first,
                 int64_t rows, DType dtype = DType::f32, Device device = Device::cpu()) {
  Tensor x = Tensor::empty({kRows, kIn}), y = Tensor::empty({kRows, kOut});
  fill_uniform_(x, uint64_t(step * kAccum + micro), "unused-test-x", -1.0, 1.0);
  fill_uniform_(y, uint64_t(step * kAccum + micro), "unused-test-y", -1.0, 1.0);
  x = x.slice(0, first, first + rows).contiguous(), y = y.slice(0, first, first + rows).contiguous();
  scale_(y, -1.0);  // -y, added below
  x = x.to(dtype).to(device), y = y.to(dtype).to(device);
  Variable h = linear_gelu(Variable(x), find(params, "enc.weight"), find(params, "enc.bias"));
  Variable diff = add(linear(h, find(params, "head.weight"), find(params, "head.bias")), Variable(y));
  Variable total = sum(mul(diff, diff));
  Variable side = linear(Variable(x), find(params, "side.weight"), Variable());  // read on every rank
  std::vector<float> mask;
  bool any = false;
  for (int64_t r = first; r < first + rows; ++r) {
    const bool takes = takes_branch(branch, step, micro, r);
    any = any || takes;
    for (int64_t j = 0; j < kOut; ++j) mask.push_back(takes ? 1.0f : 0.0f);
  }
  // No row here takes the branch: side.weight is not in this loss at all.
  if (any) {
    Variable rows_taking = Variable(Tensor::from_vector(mask, {rows, kOut}).to(dtype).to(device));
    total = add(total, sum(mul(mul(side, side), rows_taking)));
  }
  return scale(total, 1.0 / double(rows));
}

using Values = std::map<std::string, std::vector<float>>;

// One process, the whole batch, plain AdamW.
Values reference_run(Branch branch) {
  std::vector<Variable> params = initial_parameters();
  ParamGroup decayed{{}, kWeightDecay}, other{{}, 0.0};
  for (size_t i = 0; i < kSpecs.size(); ++i) (kSpecs[i].decays ? decayed : other).params.push_back(params[i]);
  AdamW adam({decayed, other}, {.lr = kLr});
  for (int64_t step = 0; step < kSteps; ++step) {
    for (int64_t micro = 0; micro < kAccum; ++micro) {
      scale(loss_of(params, branch, step, micro, 0, kRows), 1.0 / kAccum).backward();
    }
    clip_grad_norm(params, kClip);
    adam.step();
    adam.zero_grad();
  }
  Values values;
  for (const Variable& p : params) values[p.name()] = p.data().to_vector<float>();
  return values;
}

// The same through ZeroOptimizer, each rank on its rows; the f32 values
// (the masters under mixed precision) and the model's own.
struct ZeroResult {
  Values values;
  std::map<std::string, Tensor> model;
};

struct UnusedTrainer {
  // `knobs` sets the options beyond stage, learning rate, weight decay and dtype.
  UnusedTrainer(int stage, Branch branch, DType dtype = DType::f32, Device device = Device::cpu(),
                ZeroOptions knobs = {})
      : stage(stage), branch(branch), dtype(dtype), device(device), params(initial_parameters(device)),
        zero(zero_parameters(params), world(), with(knobs, stage, dtype)) {}
  static ZeroOptions with(ZeroOptions knobs, int stage, DType dtype) {
    knobs.stage = stage, knobs.adam = {.lr = kLr}, knobs.weight_decay = kWeightDecay, knobs.dtype = dtype;
    return knobs;
  }
  static std::vector<ZeroParameter> zero_parameters(const std::vector<Variable>& params) {
    std::vector<ZeroParameter> zero_params;
    for (size_t i = 0; i < kSpecs.size(); ++i) zero_params.push_back({kSpecs[i].name, params[i], kSpecs[i].decays, {}});
    return zero_params;
  }
  // Steps [from, to), each rank on its rows.
  void train(int64_t from, int64_t to) {
    const int64_t rows = kRows / world().world_size(), first = world().rank() * rows;
    for (int64_t step = from; step < to; ++step) {
      for (int64_t micro = 0; micro < kAccum; ++micro) {
        Variable loss = loss_of(params, branch, step, micro, first, rows, dtype, device);
        zero.backward(scale(loss, 1.0 / kAccum), micro == kAccum - 1);
      }
      zero.clip_grad_norm(kClip);
      zero.step(kLr);
      zero.zero_grad();
    }
  }
  ZeroResult result() {
    ZeroResult result;
    for (auto& [name, value] : zero.full_parameters()) result.values[name] = value.to_vector<float>();
    if (stage < 3) {
      for (const Variable& p : params) result.model[p.name()] = p.data().clone();
    }
    return result;
  }
  int stage;
  Branch branch;
  DType dtype;
  Device device;
  std::vector<Variable> params;  // declared before the optimizer, which packs them
  ZeroOptimizer zero;
};

ZeroResult zero_run(int stage, Branch branch, DType dtype = DType::f32, Device device = Device::cpu(),
                    ZeroOptions knobs = {}) {
  UnusedTrainer trainer(stage, branch, dtype, device, knobs);
  trainer.train(0, kSteps);
  return trainer.result();
}

void expect_matches_reference(const Values& got, const Values& want, const std::string& what, double tolerance = 1e-5) {
  for (const ParamSpec& spec : kSpecs) {
    double scale = 0;
    for (float v : want.at(spec.name)) scale = std::max(scale, double(std::abs(v)));
    EXPECT_TRUE(test::all_close(got.at(spec.name), want.at(spec.name), tolerance, tolerance * scale))
        << spec.name << " (" << what << " on " << world().world_size() << " ranks)";
  }
}

class ZeroUnused : public ::testing::TestWithParam<int> {};

// The parameters nobody uses keep their initial values exactly; the rest
// train as in one process.
TEST_P(ZeroUnused, ParametersNoRankUsesAreLeftAlone) {
  const int stage = GetParam();
  const Values reference = reference_run(Branch::never);
  const Values got = zero_run(stage, Branch::never).values;
  expect_matches_reference(got, reference, "stage " + std::to_string(stage));
  std::vector<Variable> initial = initial_parameters();
  for (const char* name : {"head.spare", "unused.weight", "side.weight"}) {
    EXPECT_EQ(got.at(name), find(initial, name).data().to_vector<float>()) << name << " moved (stage " << stage << ")";
  }
  EXPECT_NE(got.at("head.bias"), find(initial, "head.bias").data().to_vector<float>()) << "head.bias did not train";
}

// side.weight is in the loss for one row of a micro-batch (so on one rank
// only) in steps 0, 1, 3 and 4, and in no step 2 or 5 at all: it trains where any rank used
// it and is left alone (no momentum, no weight decay) where none did.
// Stages 0-2: stage 3 gathers parameters as backward reads them, so there
// every rank must reach the same ones (docs/zero.md).
class ZeroUnusedOnSomeRanks : public ::testing::TestWithParam<int> {};

TEST_P(ZeroUnusedOnSomeRanks, AParameterSomeRanksUseTrainsAsInOneProcess) {
  const int stage = GetParam();
  const Values reference = reference_run(Branch::data_dependent);
  expect_matches_reference(zero_run(stage, Branch::data_dependent).values, reference,
                           "stage " + std::to_string(stage));
  EXPECT_NE(reference.at("side.weight"), find(initial_parameters(), "side.weight").data().to_vector<float>());
}

// Under mixed precision the f32 masters of unused parameters stay exact,
// and so do the bf16 values the model reads (the rounding of the masters).
TEST_P(ZeroUnused, MixedPrecisionLeavesTheMastersAndTheirCopiesAlone) {
  const int stage = GetParam();
  ZeroResult got = zero_run(stage, Branch::never, DType::bf16);
  std::vector<Variable> initial = initial_parameters();
  for (const char* name : {"head.spare", "unused.weight"}) {
    const Tensor init = find(initial, name).data();
    EXPECT_EQ(got.values.at(name), init.to_vector<float>()) << name << " (stage " << stage << ")";
    if (stage < 3) {
      const std::vector<float> rounded = init.to(DType::bf16).to(DType::f32).to_vector<float>();
      EXPECT_EQ(got.model.at(name).to(DType::f32).to_vector<float>(), rounded)
          << name << "'s bf16 copy (stage " << stage << ")";
    }
  }
}

// A group with a parameter backward never reaches does not hold the
// reductions up: the groups after enc (head's, side's, unused's) are all in
// flight by the time the first of enc's gradients arrives (the last ones).
TEST_P(ZeroUnused, GroupsWithUnreachedParametersStillOverlapBackward) {
  const int stage = GetParam();
  Communicator& comm = world();
  std::vector<Variable> params = initial_parameters();
  std::vector<ZeroParameter> zero_params;
  for (size_t i = 0; i < kSpecs.size(); ++i) zero_params.push_back({kSpecs[i].name, params[i], kSpecs[i].decays, {}});
  ZeroOptimizer zero(zero_params, comm, {.stage = stage, .adam = {.lr = kLr}});
  int64_t reductions_before_enc = -1;
  for (const char* name : {"enc.weight", "enc.bias"}) {
    find(params, name).add_post_accumulate_hook([&](Variable&) {
      const CommStats& s = comm.stats();
      if (reductions_before_enc < 0) {
        reductions_before_enc = s[CollectiveOp::all_reduce].calls + s[CollectiveOp::reduce_scatter].calls;
      }
    });
  }
  comm.reset_stats();
  const int64_t rows = kRows / comm.world_size();
  zero.backward(loss_of(params, Branch::never, 0, 0, comm.rank() * rows, rows), /*last_micro_batch=*/true);
  // At least head (decay), head (no decay), side and unused; the first of
  // enc's groups may have been launched by the optimizer's own hook.
  EXPECT_GE(reductions_before_enc, 4);
}

// A loss that cannot be differentiated is refused before any reduction
// starts; a backward that fails halfway (here a rule that throws) lets the
// reductions it started finish first. Either way, after zero_grad the
// optimizer trains on exactly as one that never saw the failure.
TEST_P(ZeroUnused, AFailedBackwardLeavesNothingHalfDone) {
  const int stage = GetParam();
  Communicator& comm = world();
  UnusedTrainer trainer(stage, Branch::never);
  const int64_t rows = kRows / comm.world_size(), first = comm.rank() * rows;
  comm.reset_stats();
  Variable frozen;
  {
    NoGradGuard no_grad;
    frozen = loss_of(trainer.params, Branch::never, 0, 0, first, rows);
  }
  EXPECT_THROW(trainer.zero.backward(frozen, true), Error);
  Variable pair = make_result(Tensor::zeros({2}), "pair", {trainer.params[0]}, [](const Tensor&) {
    return std::vector<Tensor>{Tensor()};
  });
  EXPECT_THROW(trainer.zero.backward(pair, true), Error);  // two numbers, not a loss
  EXPECT_EQ(comm.stats()[CollectiveOp::all_reduce].calls + comm.stats()[CollectiveOp::reduce_scatter].calls, 0);
  Variable explodes = make_result(Tensor::zeros({}), "explodes", {trainer.params[0]}, [](const Tensor&) {
    throw Error("a backward rule failed");
    return std::vector<Tensor>{};
  });
  Variable loss = add(loss_of(trainer.params, Branch::never, 0, 0, first, rows), explodes);
  EXPECT_THROW(trainer.zero.backward(loss, true), Error);
  trainer.zero.zero_grad();
  trainer.train(0, kSteps);
  expect_matches_reference(trainer.result().values, reference_run(Branch::never), "after failed backwards");
}

// The same on CUDA tensors (the update ranges are slices of the flat
// buffers there), against the CPU's one-process run at 1e-4: a branch some
// ranks take at stages 0-2, parameters nobody uses at stage 3.
class ZeroUnusedOnCuda : public ::testing::TestWithParam<int> {};

TEST_P(ZeroUnusedOnCuda, TrainsAsOneCpuProcess) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU visible; scripts/gpu_check.sh runs this on one";
  const int stage = GetParam();
  const Branch branch = stage == 3 ? Branch::never : Branch::data_dependent;
  const Values got = zero_run(stage, branch, DType::f32, local_cuda_device()).values;
  expect_matches_reference(got, reference_run(branch), "stage " + std::to_string(stage) + " on CUDA", 1e-4);
  std::vector<Variable> initial = initial_parameters();
  for (const char* name : {"head.spare", "unused.weight"}) {
    EXPECT_EQ(got.at(name), find(initial, name).data().to_vector<float>()) << name << " moved (stage " << stage << ")";
  }
}

// DeepSpeed's knobs change how the reductions move, never what is
// computed: buckets that pack a group left out of backward with the ones
// after it in the order, and all reductions held until backward is done.
TEST_P(ZeroUnusedOnSomeRanks, BucketsAndOverlapChangeNothing) {
  const int stage = GetParam();
  const Values reference = reference_run(Branch::data_dependent);
  for (bool overlap : {true, false}) {
    const ZeroOptions knobs{.reduce_bucket = 40, .allgather_bucket = 40, .overlap_comm = overlap};
    expect_matches_reference(zero_run(stage, Branch::data_dependent, DType::f32, Device::cpu(), knobs).values,
                             reference, "stage " + std::to_string(stage) + (overlap ? ", buckets" : ", no overlap"));
  }
}

// A checkpoint keeps each parameter's own step count: saved after step 2
// (side.weight used in 2 of 3 steps, head.spare and unused.weight in none),
// resumed in a fresh process state, the run ends exactly where the one that
// never stopped does.
TEST_P(ZeroUnusedOnSomeRanks, ACheckpointKeepsEachParametersStepCount) {
  const int stage = GetParam();
  Tensor pid = Tensor::full({1}, double(::getpid()), TensorOptions().dtype(DType::i64));
  world().broadcast(pid, 0)->wait();  // one directory for every rank, none shared with another test program
  const std::string dir = ::testing::TempDir() + "/sg-unused-" + std::to_string(int64_t(pid.item())) + "-stage" +
                          std::to_string(stage);
  if (world().rank() == 0) std::filesystem::remove_all(dir);
  world().barrier()->wait();
  {
    UnusedTrainer first(stage, Branch::data_dependent);
    first.train(0, 3);
    first.zero.save_checkpoint(dir);
  }
  std::ifstream file(dir + "/index.json");
  const std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const CheckpointIndex index = parse_checkpoint_index(text, dir);
  EXPECT_EQ(index.optimizer_steps, 3);
  EXPECT_EQ(index.parameter_steps,
            (std::map<std::string, int64_t>{{"head.spare", 0}, {"side.weight", 2}, {"unused.weight", 0}}));
  UnusedTrainer second(stage, Branch::data_dependent);
  second.zero.load_checkpoint(dir);
  second.train(3, kSteps);
  EXPECT_EQ(second.result().values, zero_run(stage, Branch::data_dependent).values) << "stage " << stage;
  world().barrier()->wait();
  if (world().rank() == 0) std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Stages, ZeroUnusedOnCuda, ::testing::Values(0, 1, 2, 3),
                         [](const auto& info) { return "stage" + std::to_string(info.param); });
INSTANTIATE_TEST_SUITE_P(Stages, ZeroUnused, ::testing::Values(0, 1, 2, 3),
                         [](const auto& info) { return "stage" + std::to_string(info.param); });
INSTANTIATE_TEST_SUITE_P(Stages, ZeroUnusedOnSomeRanks, ::testing::Values(0, 1, 2),
                         [](const auto& info) { return "stage" + std::to_string(info.param); });

}  // namespace
}  // namespace sg
