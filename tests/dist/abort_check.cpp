// A planted failure: rank 1 throws and nothing catches it, while the other
// ranks wait in a barrier with the default (300 s) timeout. The job must end
// at once, non-zero, with rank 1's message (tests/dist/abort_check.sh checks).
#include "dist/world.h"

int main() {
  sg::Communicator& comm = sg::world();
  if (comm.rank() == 1) throw sg::Error("planted failure on purpose");
  comm.barrier()->wait();
  return 0;
}
