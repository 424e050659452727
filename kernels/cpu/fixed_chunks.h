// Sums over many threads that give the same bits on any number of threads.
//
// A parallel sum that gives each thread its own part (OpenMP's reduction
// clause, or per-thread partials added under a lock) groups the additions by
// thread, so its rounding depends on how many threads there are, and, where
// the partials are added in the order the threads finish, changes from run to
// run. The central invariant (docs/zero.md) needs the same bits every run, so
// sums here cut the work into chunks of a fixed size instead: each chunk is
// summed in order by whichever thread takes it, and the chunk sums are then
// added in chunk order by one thread. One chunk is the plain serial loop.
//
// Read next: kernels/cpu/reduce.h, kernels/cpu/normalization.h.
#pragma once

#include <cstdint>
#include <vector>

namespace sg::cpu {

// The sum over [0, n) of term(begin, end) (the sum of one chunk, in order),
// chunks of `chunk` indices added in chunk order.
template <typename Acc, typename Term>
Acc sum_in_fixed_chunks(int64_t n, int64_t chunk, Term term) {
  const int64_t chunks = (n + chunk - 1) / chunk;
  if (chunks <= 1) return n > 0 ? term(int64_t{0}, n) : Acc(0);
  std::vector<Acc> partial(static_cast<size_t>(chunks));
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    partial[size_t(c)] = term(c * chunk, c + 1 < chunks ? (c + 1) * chunk : n);
  }
  Acc total = partial[0];
  for (int64_t c = 1; c < chunks; ++c) total += partial[size_t(c)];
  return total;
}

}  // namespace sg::cpu
