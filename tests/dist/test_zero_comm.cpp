// What ZeRO moves between ranks, counted by the communicator: 2 Psi per step
// for stages 0-2 and, for stage 3, exactly what optim/gather_schedule.h
// says (3 Psi less what the schedule need not gather twice); DeepSpeed's
// bucket, overlap, prefetch and persistence knobs change how it is moved
// (calls, timing, memory) and never what is computed.
#include "tests/dist/zero_test_util.h"

namespace sg {
namespace {

using namespace zero_test;

// One step of the single-step setup (accumulation 1).
void one_step(OneStepSetup& setup) {
  setup.zero.backward(setup.model.loss(setup.x, setup.y), true);
  setup.zero.clip_grad_norm(kClip);
  setup.zero.step(kLr);
  setup.zero.zero_grad();
}

int64_t padded_of(const ZeroOptimizer& zero, const std::string& group) {
  for (const ShardGroup& g : zero.groups()) {
    if (g.name() == group) return g.padded();
  }
  ADD_FAILURE() << "no group " << group;
  return 0;
}

// Besides the model's values, each step on more than one rank all-reduces one
// flag per parameter (whether it got a gradient on any rank: step() leaves a
// parameter none gave one alone, as plain AdamW does): P elements, one call.
int64_t used_flags(const ZeroOptimizer& zero) {
  int64_t parameters = 0;
  for (const ShardGroup& g : zero.groups()) parameters += int64_t(g.params().size());
  return world().world_size() > 1 ? parameters : 0;
}

// Communication per step without accumulation: 2 Psi for stages 0-2 (Psi: the
// padded elements of every group), counted by the communicator. Stage 0
// all-reduces Psi (counted twice: a reduce-scatter and an all-gather's worth);
// stages 1-2 reduce-scatter Psi and all-gather Psi, plus the one-element
// all-reduce of the squared gradient norm; and the used flags.
TEST(ZeroCommunication, TwoPsiPerStepForStagesZeroToTwo) {
  Communicator& comm = world();
  for (int stage : {0, 1, 2}) {
    OneStepSetup setup(stage);
    ZeroOptimizer& zero = setup.zero;
    comm.reset_stats();
    zero.backward(setup.model.loss(setup.x, setup.y), true);
    zero.clip_grad_norm(kClip);
    zero.step(kLr);
    const CommStats& s = comm.stats();
    const int64_t psi = zero.padded_elements(), flags = used_flags(zero);
    const int64_t volume = 2 * (s[CollectiveOp::all_reduce].elements - flags) +
                           s[CollectiveOp::reduce_scatter].elements + s[CollectiveOp::all_gather].elements;
    EXPECT_EQ(volume, 2 * psi + (stage > 0 ? 2 : 0)) << "stage " << stage;
    EXPECT_EQ(s[CollectiveOp::all_reduce].calls + s[CollectiveOp::reduce_scatter].calls,
              int64_t(zero.groups().size()) + (stage > 0 ? 1 : 0) + (flags > 0 ? 1 : 0))
        << "one reduction per group";
  }
}

// Stage 3 moves 3 Psi per step, less what its schedule need not gather
// twice: every group is all-gathered for forward (Psi) and, where backward
// reads it, again for backward; every group's gradients are reduce-scattered
// (Psi). From the second step on (the schedule follows the first step's
// reads), exactly:
//   forward   each group once, the tied embedding kept between its two reads: Psi
//   backward  Psi - wte - wpe: the head's read of wte is carried over the
//             turn from forward, and the embedding's backward never reads wpe
//             (it only adds rows of the output gradient)
//   reduce-scatter Psi, plus the one-element all-reduce of the gradient norm
//   and the used flags.
TEST(ZeroCommunication, ThreePsiLessWhatStageThreeNeedNotGatherTwice) {
  Communicator& comm = world();
  OneStepSetup setup(3);
  ZeroOptimizer& zero = setup.zero;
  one_step(setup);  // the schedule's plan
  comm.reset_stats();
  one_step(setup);
  const CommStats& s = comm.stats();
  const int64_t psi = zero.padded_elements(), groups = int64_t(zero.groups().size());
  const int64_t wte = padded_of(zero, "wte (no decay)"), wpe = padded_of(zero, "wpe (no decay)");
  EXPECT_EQ(s[CollectiveOp::all_gather].elements, 2 * psi - wte - wpe);
  EXPECT_EQ(s[CollectiveOp::all_gather].calls, 2 * groups - 2);
  EXPECT_EQ(s[CollectiveOp::reduce_scatter].elements, psi);
  EXPECT_EQ(s[CollectiveOp::reduce_scatter].calls, groups);
  EXPECT_EQ(s[CollectiveOp::all_reduce].elements, 1 + used_flags(zero));  // the squared gradient norm, the flags
}

// Persistent groups (fewer elements than the threshold) are gathered at
// their first read and kept for the step: with every group persistent, a
// step gathers Psi once, and the model stays whole until the step ends.
TEST(ZeroCommunication, PersistentGroupsAreGatheredOncePerStep) {
  Communicator& comm = world();
  OneStepSetup setup(3, {.persistence_threshold = int64_t(1) << 40});
  ZeroOptimizer& zero = setup.zero;
  for (int step = 0; step < 2; ++step) {
    comm.reset_stats();
    one_step(setup);
    EXPECT_EQ(comm.stats()[CollectiveOp::all_gather].elements, zero.padded_elements()) << "step " << step;
    EXPECT_EQ(comm.stats()[CollectiveOp::all_gather].calls, int64_t(zero.groups().size())) << "step " << step;
  }
  for (const ShardGroup& g : zero.groups()) EXPECT_FALSE(g.is_gathered()) << g.name() << ": stale after the step";
}

// Buckets hold the same volume in fewer calls: with buckets larger than the
// model, one reduction per backward and (stages 1-2) one all-gather per step.
TEST(ZeroCommunication, BucketsPackGroupsIntoOneCollective) {
  Communicator& comm = world();
  const int64_t huge = int64_t(1) << 40;
  for (int stage : {0, 1, 2, 3}) {
    OneStepSetup setup(stage, {.reduce_bucket = huge, .allgather_bucket = huge});
    ZeroOptimizer& zero = setup.zero;
    comm.reset_stats();
    one_step(setup);
    const CommStats& s = comm.stats();
    const int64_t psi = zero.padded_elements();
    if (stage == 0) {
      EXPECT_EQ(s[CollectiveOp::all_reduce].calls, 1 + (used_flags(zero) > 0 ? 1 : 0));
      EXPECT_EQ(s[CollectiveOp::all_reduce].elements, psi + used_flags(zero));
      continue;
    }
    EXPECT_EQ(s[CollectiveOp::reduce_scatter].calls, 1) << "stage " << stage;
    EXPECT_EQ(s[CollectiveOp::reduce_scatter].elements, psi) << "stage " << stage;
    if (stage < 3) {
      EXPECT_EQ(s[CollectiveOp::all_gather].calls, 1) << "stage " << stage;
      EXPECT_EQ(s[CollectiveOp::all_gather].elements, psi) << "stage " << stage;
    }
  }
}

// The knobs never change the numbers: every stage with small buckets, the
// reductions held until backward is done, a wide prefetch window and the
// small groups persistent trains exactly like one process.
class ZeroKnobs : public ::testing::TestWithParam<int> {};

TEST_P(ZeroKnobs, SameLossesAndParametersAsOneProcess) {
  const ZeroOptions knobs{.reduce_bucket = 2000,
                          .allgather_bucket = 2000,
                          .overlap_comm = false,
                          .prefetch_bucket = 4000,
                          .persistence_threshold = 300};  // the biases' and norms' groups (208 elements and less)
  ZeroEquivalence::check(zero_run(GetParam(), false, knobs), reference(), GetParam());
}

INSTANTIATE_TEST_SUITE_P(Stages, ZeroKnobs, ::testing::Values(0, 1, 2, 3),
                         [](const auto& info) { return "stage" + std::to_string(info.param); });

// From the second step on, stage 3 prefetches: the group the previous step
// read next starts gathering while the current one computes, and later
// gathers find it already under way; a wider window prefetches no less.
TEST(ZeroStage3, PrefetchesTheNextGroupFromTheSecondStepOn) {
  OneStepSetup setup(3);
  ZeroOptimizer& zero = setup.zero;
  for (int step = 0; step < 2; ++step) {
    zero.backward(setup.model.loss(setup.x, setup.y), true);
    zero.step(kLr);
    zero.zero_grad();
    if (step == 0) {
      EXPECT_EQ(zero.prefetched_gathers(), 0);  // nothing to go by yet
    }
  }
  EXPECT_GT(zero.prefetched_gathers(), int64_t(zero.groups().size()));
  for (const ShardGroup& g : zero.groups()) EXPECT_FALSE(g.is_gathered() || g.gather_in_flight()) << g.name();
  OneStepSetup wide(3, {.prefetch_bucket = zero.padded_elements()});
  one_step(wide), one_step(wide);
  EXPECT_GE(wide.zero.prefetched_gathers(), setup.zero.prefetched_gathers());
}

}  // namespace
}  // namespace sg
