// The ZeRO-3 gather schedule on its own (no tensors, no ranks): the reads of
// a GPT's groups in forward and backward, replayed step after step, with a
// simulated set of gathered groups that every action must keep consistent.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <utility>

#include "optim/gather_schedule.h"

namespace sg {
namespace {

constexpr int kLayers = 3;
// wte, wpe, then per block its no-decay group (norms, biases) and its
// weights, then ln_f.
constexpr size_t kWte = 0, kWpe = 1, kLnF = 2 + 2 * kLayers;
size_t biases(int layer) { return size_t(2 + 2 * layer); }
size_t weights(int layer) { return size_t(3 + 2 * layer); }

// The groups a GPT's forward reads, in order (one entry per parameter read).
std::vector<size_t> forward_reads() {
  std::vector<size_t> reads = {kWte, kWpe};
  for (int l = 0; l < kLayers; ++l) {
    const size_t b = biases(l), w = weights(l);
    // ln_1 (w, b), c_attn (w, b), attn.c_proj (w, b), ln_2 (w, b), c_fc (w, b), mlp.c_proj (w, b)
    for (size_t g : {b, b, w, b, w, b, b, b, w, b, w, b}) reads.push_back(g);
  }
  reads.push_back(kLnF), reads.push_back(kLnF);
  reads.push_back(kWte);  // the tied head
  return reads;
}

// Backward reads weights (for the input's gradient) and norm gains, never
// biases or embedding tables.
std::vector<size_t> backward_reads() {
  std::vector<size_t> reads = {kWte, kLnF};
  for (int l = kLayers - 1; l >= 0; --l) {
    const size_t b = biases(l), w = weights(l);
    for (size_t g : {w, w, b, w, w, b}) reads.push_back(g);  // mlp.c_proj, c_fc, ln_2, attn.c_proj, c_attn, ln_1
  }
  return reads;
}

struct Replay {
  explicit Replay(GatherSchedule s) : schedule(std::move(s)) {}
  GatherSchedule schedule;
  std::set<size_t> gathered, in_flight;
  int64_t gathers = 0, prefetches = 0;
  size_t most_gathered = 0;

  void apply(const GatherSchedule::Actions& a, size_t read) {
    for (size_t r : a.release) {
      ASSERT_TRUE(gathered.count(r) || in_flight.count(r)) << "released " << r << ", which was not gathered";
      gathered.erase(r), in_flight.erase(r);
    }
    if (a.gather) {
      ASSERT_FALSE(gathered.count(read)) << "gathered " << read << " twice";
      prefetches += in_flight.erase(read);
      gathered.insert(read), ++gathers;
    }
    ASSERT_TRUE(gathered.count(read)) << "read " << read << " while not gathered";
    for (size_t p : a.prefetch) {
      ASSERT_FALSE(gathered.count(p) || in_flight.count(p)) << "prefetched " << p << " twice";
      in_flight.insert(p);
    }
    most_gathered = std::max(most_gathered, gathered.size());
  }
  void read(const std::vector<size_t>& reads) {
    for (size_t g : reads) apply(schedule.touch(g), g);
  }
  // One step with accumulation 1; returns the gathers of (forward, backward).
  std::pair<int64_t, int64_t> step() {
    const int64_t start = gathers;
    read(forward_reads());
    const int64_t forward = gathers - start;
    schedule.next_phase();
    read(backward_reads());
    schedule.next_phase();
    std::vector<size_t> left = schedule.end_step();
    EXPECT_EQ(left.size(), gathered.size() + in_flight.size());
    for (size_t g : left) EXPECT_TRUE(gathered.count(g) || in_flight.count(g)) << g;
    gathered.clear(), in_flight.clear();
    return {forward, gathers - start - forward};
  }
};

std::vector<int64_t> sizes(int64_t block_weights = 1200) {
  std::vector<int64_t> elements = {650, 130};
  for (int l = 0; l < kLayers; ++l) elements.push_back(130), elements.push_back(block_weights);
  elements.push_back(20);
  return elements;
}

TEST(GatherSchedule, FollowingThePlanGathersEachGroupOncePerPhaseThatReadsIt) {
  Replay replay{GatherSchedule(sizes())};
  replay.step();  // no plan yet: least recently used
  EXPECT_TRUE(replay.schedule.following_plan());
  replay.gathers = replay.prefetches = 0, replay.most_gathered = 0;
  auto [forward, backward] = replay.step();
  const int64_t groups = int64_t(sizes().size());
  EXPECT_EQ(forward, groups);          // wte kept between its two reads
  EXPECT_EQ(backward, groups - 2);     // wte carried over the turn; wpe never read
  EXPECT_EQ(replay.prefetches, replay.gathers - 1);  // all but the very first
  EXPECT_LE(replay.most_gathered, 3u);  // wte (read again at the head) and the block's two groups
}

TEST(GatherSchedule, WithoutAPlanTwoRecentGroupsStayGathered) {
  Replay replay{GatherSchedule(sizes())};
  replay.step();
  EXPECT_EQ(replay.prefetches, 0);
  EXPECT_LE(replay.most_gathered, 2u);
  // A departure from the plan (a forward pass for evaluation first) falls back
  // to the same rule for the rest of the step.
  replay.most_gathered = 0;
  replay.read({kLnF});
  EXPECT_FALSE(replay.schedule.following_plan());
  replay.step();
  EXPECT_LE(replay.most_gathered, 2u);
}

TEST(GatherSchedule, PersistentGroupsStayUntilTheStepEnds) {
  Replay replay{GatherSchedule(sizes(), 0, /*persistence_threshold=*/200)};  // wpe, the biases, ln_f
  for (int step = 0; step < 3; ++step) {
    replay.gathers = 0;
    replay.step();
    // Persistent (wpe, the blocks' biases, ln_f): gathered once each; from
    // the second step on, wte once (carried over the turn) and each block's
    // weights once per phase.
    if (step > 0) {
      EXPECT_EQ(replay.gathers, (2 + kLayers) + 1 + 2 * kLayers) << "step " << step;
    }
  }
}

TEST(GatherSchedule, APrefetchWindowCountsElementsAhead) {
  Replay narrow{GatherSchedule(sizes())}, wide{GatherSchedule(sizes(), /*prefetch_elements=*/3000)};
  narrow.step(), wide.step();
  // At the first read of the second step, the narrow window prefetches wpe
  // only; the wide one wpe, blocks 0 and 1 and block 2's biases (130 + 130 +
  // 1200 + 130 + 1200 + 130 <= 3000 < + 1200).
  GatherSchedule::Actions a = narrow.schedule.touch(kWte), b = wide.schedule.touch(kWte);
  EXPECT_EQ(a.prefetch, std::vector<size_t>{kWpe});
  EXPECT_EQ(b.prefetch, (std::vector<size_t>{kWpe, biases(0), weights(0), biases(1), weights(1), biases(2)}));
}

}  // namespace
}  // namespace sg
