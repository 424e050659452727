// Joining the job. world() returns the process-wide Communicator:
//   * under mpirun (OpenMPI's OMPI_COMM_WORLD_SIZE, or PMI_SIZE, in the
//     environment) it initializes MPI, and CPU collectives go through MPI;
//   * a plain process with no launcher is rank 0 of a world of 1, and never
//     touches the MPI runtime.
// Each rank uses GPU local_rank() % (GPUs on the node) for its CUDA tensors.
//
// Under MPI an exception that escapes main() on any rank prints that rank's
// message and aborts the whole job (MPI_Abort), so no rank is left waiting
// forever in a collective.
//
// Read next: dist/communicator.h, dist/shard_ops.h.
#pragma once

#include <string>

#include "dist/communicator.h"

namespace sg {

Communicator& world();            // initializes on first call
bool launched_by_mpi();           // a launcher's variables are in the environment
int local_rank();                 // rank among this node's processes (0 without a launcher)
int local_world_size();           // how many processes of the job run on this node (1 without a launcher)
// The GPU this rank's CUDA tensors belong on: cuda:(local_rank() % GPUs on
// the node). With a GPU per rank the NCCL backend runs there and refuses
// tensors on any other; ranks sharing one GPU all get cuda:0.
Device local_cuda_device();
void finalize_world();            // optional: MPI_Finalize now (it also runs at exit)

// For main()'s catch of an error it reports itself. In a job of several
// ranks, a rank that returns from main() after an error is not done: the
// others wait for it in their next collective, and it waits for them in
// MPI_Finalize, forever. So there this prints "program: rank R failed: ..." and
// aborts the whole job (MPI_Abort). In a world of one, or before world() was
// created (a bad flag, which every rank sees alike), it returns and main
// goes on to report the error and return its code.
void abort_job_after_error(const char* program, const char* message);

// Which backend carries CUDA tensors (world() asks on the first collective
// on one):
//   a world without a launcher:      local (copies on the GPU);
//   one GPU per rank, NCCL built:    NCCL;
//   ranks sharing a GPU, or no NCCL: MPI through pinned host staging.
// `forced` is SG_CUDA_COLLECTIVES ("", "nccl" or "mpi"); impossible choices
// (NCCL with ranks sharing a GPU, or without NCCL) are errors.
enum class CudaCollectives { local, nccl, staged_mpi };
CudaCollectives choose_cuda_collectives(bool launched, int ranks_on_node, int gpus_on_node, bool nccl_built,
                                        const std::string& forced);

}  // namespace sg
