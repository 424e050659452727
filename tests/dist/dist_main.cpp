// main() for the multi-rank tests: every rank runs every test; the job fails
// when any rank fails. Run as `mpirun -np N test_dist` (CTest does N = 1..4)
// or plainly, as a world of one.
#include <gtest/gtest.h>

#include "dist/world.h"
#include "tensor/ops.h"

int main(int argc, char** argv) {
  sg::Communicator& comm = sg::world();
  // Rank 0 prints the progress; the others print only their failures.
  if (comm.rank() != 0) ::testing::GTEST_FLAG(brief) = true;
  ::testing::InitGoogleTest(&argc, argv);
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  // Agree on the outcome, so a failure on any rank fails the whole job.
  sg::Tensor flag = sg::Tensor::full({1}, double(failed));
  comm.all_reduce(flag)->wait();
  int any_failed = flag.item() > 0 ? 1 : 0;
  if (comm.rank() == 0 && any_failed && !failed) std::fprintf(stderr, "a test failed on another rank\n");
  sg::finalize_world();
  return any_failed;
}
