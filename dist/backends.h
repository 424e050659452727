// The backends a Communicator can be built on (dist/world.cpp picks them).
#pragma once

#include <memory>

#include "dist/communicator.h"

namespace sg {

// A world of one process: collectives are copies (all_gather,
// reduce_scatter) or nothing at all. Used without a launcher; needs no MPI.
std::unique_ptr<Backend> make_local_backend();

#ifdef SG_MPI
// MPI (OpenMPI) nonblocking collectives over MPI_COMM_WORLD, for CPU tensors.
// Requires MPI to be initialized (dist/world.cpp does it).
std::unique_ptr<Backend> make_mpi_backend();
#endif

// Collectives on device (CUDA) tensors carried by a host backend: inputs are
// copied into pinned host buffers, `host` runs the collective, the results
// are copied back on completion. For ranks that share one GPU (NCCL needs a
// GPU per rank); also correct, if pointless, on CPU tensors.
std::unique_ptr<Backend> make_staged_backend(std::unique_ptr<Backend> host);

#ifdef SG_NCCL
// NCCL collectives for CUDA tensors on their own stream. Its unique id is
// broadcast through `bootstrap` (the MPI communicator).
std::unique_ptr<Backend> make_nccl_backend(Communicator& bootstrap, int device);
#endif

}  // namespace sg
