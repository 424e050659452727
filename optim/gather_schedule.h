// GatherSchedule: when ZeRO-3 gathers, releases and prefetches each shard
// group. Pure bookkeeping (no tensors, no communication), so the policy can
// be read and tested on its own; optim/zero.cpp carries out what it decides.
//
// Every read of a parameter *touches* its group (autograd's before-use hook,
// Variable::value()). Consecutive reads of one group are one touch. A step
// records its touches, each with its phase (0: forward of the first
// micro-batch, 1: its backward, 2: forward of the second, ...). The program
// is the same every step, so the next step follows that record as its plan:
//
//   * a group stays gathered while the plan says its phase reads it again
//     (a block's two groups are read in turn; the tied token embedding is
//     read at both ends of the forward pass);
//   * when the reads move on to another group, the one before is released,
//     unless its phase reads it again; the last group of forward is kept
//     when backward starts with it (the tied embedding, read by the head);
//   * the groups the plan reads next are prefetched: at least one group,
//     and more while their elements stay within prefetch_elements
//     (DeepSpeed's stage3_prefetch_bucket_size);
//   * a group with fewer elements than persistence_threshold
//     (stage3_param_persistence_threshold) is persistent: gathered at its
//     first read and kept until the step ends.
//
// So, following its plan, a step gathers every group once per phase that
// reads it, less the groups carried across a phase turn and the persistent
// ones after their first gather; for a GPT with accumulation 1 that is
// Psi (forward) + Psi - wte - wpe (backward: the head's read of wte is
// carried over the turn, and the embedding's backward never reads wpe).
//
// With no plan (the first step) or once a step departs from it (an
// evaluation between steps, another path through the model), the schedule
// keeps the two most recently read groups gathered and releases the least
// recently read one; no prefetch.
//
// Read next: optim/zero.h, which drives the groups through a step.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sg {

class GatherSchedule {
 public:
  // group_elements: each group's padded elements (what its gather moves).
  explicit GatherSchedule(std::vector<int64_t> group_elements, int64_t prefetch_elements = 0,
                          int64_t persistence_threshold = 0);

  struct Actions {
    std::vector<size_t> release;   // release these groups first
    bool gather = false;           // then gather the touched group (or finish its prefetch)
    std::vector<size_t> prefetch;  // then begin gathering these
  };
  // An op is about to read group g.
  Actions touch(size_t g);
  // Forward ends (backward begins), or backward ends.
  void next_phase();
  // The step is over: returns every group that is gathered or in flight (to
  // release); this step's touches become the next step's plan.
  std::vector<size_t> end_step();
  // Every group was released outside the schedule (e.g. to save a checkpoint).
  void all_released();

  bool persistent(size_t g) const { return elements_[g] < persistence_threshold_; }
  bool following_plan() const { return following_; }
  // Groups gathered at this moment (not counting prefetches in flight).
  size_t gathered_count() const;

 private:
  enum class State { released, in_flight, gathered };
  struct Touch {
    size_t group;
    int phase;
    bool operator==(const Touch&) const = default;
  };
  void release(size_t g, Actions& actions);
  void mark_gathered(size_t g, Actions& actions);
  void evict_least_recent(size_t keep, Actions& actions);
  void prefetch_after(size_t k, Actions& actions);

  std::vector<int64_t> elements_;
  int64_t prefetch_elements_, persistence_threshold_;
  std::vector<State> state_;
  std::vector<size_t> recent_;  // gathered groups, least recently read first
  std::vector<Touch> trace_, plan_;
  std::vector<bool> read_again_;  // per plan touch: does its phase read the group again later?
  std::vector<bool> seen_;        // prefetch_after's scratch
  int phase_ = 0;
  bool following_ = false;  // this step has matched the plan so far
};

}  // namespace sg
