#include "optim/gather_schedule.h"

#include <algorithm>
#include <map>
#include <utility>

namespace sg {
namespace {
constexpr size_t kRecentGroups = 2;  // without a plan: the group in use and the one before it
}

GatherSchedule::GatherSchedule(std::vector<int64_t> group_elements, int64_t prefetch_elements,
                               int64_t persistence_threshold)
    : elements_(std::move(group_elements)),
      prefetch_elements_(prefetch_elements),
      persistence_threshold_(persistence_threshold),
      state_(elements_.size(), State::released) {}

size_t GatherSchedule::gathered_count() const {
  return size_t(std::count(state_.begin(), state_.end(), State::gathered));
}

void GatherSchedule::release(size_t g, Actions& actions) {
  state_[g] = State::released;
  recent_.erase(std::remove(recent_.begin(), recent_.end(), g), recent_.end());
  actions.release.push_back(g);
}

void GatherSchedule::mark_gathered(size_t g, Actions& actions) {
  if (state_[g] != State::gathered) {
    actions.gather = true;  // a prefetch in flight is finished by the gather
    state_[g] = State::gathered;
  }
  recent_.erase(std::remove(recent_.begin(), recent_.end(), g), recent_.end());
  recent_.push_back(g);
  if (!following_) evict_least_recent(g, actions);
}

GatherSchedule::Actions GatherSchedule::touch(size_t g) {
  Actions actions;
  const Touch now{g, phase_};
  if (!trace_.empty() && trace_.back() == now) {  // the same run of reads
    if (state_[g] != State::gathered) mark_gathered(g, actions);  // released outside the schedule meanwhile
    return actions;
  }
  const size_t k = trace_.size();
  const bool was_following = following_;
  following_ = was_following && k < plan_.size() && plan_[k] == now;
  // Moving on from the group read before: done with it in its phase?
  if (was_following && k > 0) {
    const size_t before = trace_.back().group;
    if (before != g && state_[before] == State::gathered && !persistent(before) && !read_again_[k - 1]) {
      release(before, actions);
    }
  }
  trace_.push_back(now);
  mark_gathered(g, actions);
  if (following_) prefetch_after(k, actions);
  return actions;
}

// Without a plan: at most kRecentGroups non-persistent groups stay gathered.
void GatherSchedule::evict_least_recent(size_t keep, Actions& actions) {
  auto transient = [&] {
    return size_t(std::count_if(recent_.begin(), recent_.end(), [&](size_t r) { return !persistent(r); }));
  };
  while (transient() > kRecentGroups) {
    auto oldest = std::find_if(recent_.begin(), recent_.end(), [&](size_t r) { return r != keep && !persistent(r); });
    release(*oldest, actions);
  }
}

// The groups the plan reads after touch k that are not gathered now: the
// first is always prefetched (or already in flight); more follow while the
// window's elements stay within prefetch_elements.
void GatherSchedule::prefetch_after(size_t k, Actions& actions) {
  int64_t window = 0;
  seen_.assign(elements_.size(), false);  // (a member: no allocation per touch)
  for (size_t j = k + 1; j < plan_.size(); ++j) {
    const size_t c = plan_[j].group;
    if (seen_[c] || state_[c] == State::gathered) continue;
    seen_[c] = true;
    if (window > 0 && window + elements_[c] > prefetch_elements_) return;
    window += elements_[c];
    if (state_[c] == State::released) {
      state_[c] = State::in_flight;
      actions.prefetch.push_back(c);
    }
  }
}

void GatherSchedule::next_phase() { ++phase_; }

std::vector<size_t> GatherSchedule::end_step() {
  std::vector<size_t> out;
  for (size_t g = 0; g < state_.size(); ++g) {
    if (state_[g] != State::released) out.push_back(g);
  }
  all_released();
  plan_ = std::move(trace_);
  trace_.clear();
  // read_again_[k]: does plan_[k]'s phase read its group after touch k?
  read_again_.assign(plan_.size(), false);
  std::map<std::pair<size_t, int>, bool> later;
  for (size_t k = plan_.size(); k-- > 0;) {
    auto key = std::make_pair(plan_[k].group, plan_[k].phase);
    read_again_[k] = later[key];
    later[key] = true;
  }
  phase_ = 0;
  following_ = !plan_.empty();
  return out;
}

void GatherSchedule::all_released() {
  std::fill(state_.begin(), state_.end(), State::released);
  recent_.clear();
}

}  // namespace sg
