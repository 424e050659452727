// The NCCL calls shardgrad makes (dist/nccl_backend.cpp), for the emulator
// (tools/cuda_emu/simt.h): linked instead of libnccl, declared by the
// toolkit's nccl.h, so the signatures are checked.
//
// Emulated device memory is host memory, so a collective is the matching MPI
// collective, over a duplicate of MPI_COMM_WORLD (the only communicator
// shardgrad builds NCCL on); a world of one needs no MPI. What it checks is
// how NCCL is called: counts per rank (all-gather takes the input's count,
// reduce-scatter the output's), in-place layouts, and that every buffer is
// device memory (NCCL cannot read a host tensor).
//
// Asynchrony (see streams.cpp): the ranks must exchange in the order they
// call, so each collective's MPI exchange happens during the call, on a copy
// of its input taken once its stream has reached it. Only its result is
// queued on the stream, to land when the stream gets there. Under
// SG_EMU_STREAMS=lazy that is as late as the program allows, so a kernel
// that reads the result without waiting for the collective's event reads the
// old contents. And when the result lands, the input must still hold what
// was sent: if anything wrote it in between, it wrote a buffer NCCL was
// still reading (a missing wait, or a buffer freed and reused too early),
// and the emulator says so.
#include <nccl.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "kernels/error.h"
#include "tools/cuda_emu/runtime.h"
#include "tools/cuda_emu/simt.h"

#ifdef SG_MPI
#include <mpi.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

struct ncclComm {
  int rank = 0, ranks = 1;
#ifdef SG_MPI
  MPI_Comm mpi = MPI_COMM_NULL;
#endif
};

namespace {

size_t element_bytes(ncclDataType_t type) {
  switch (type) {
    case ncclFloat16: case ncclBfloat16: return 2;  // the types nccl_backend.cpp sends
    case ncclInt32: case ncclFloat32: return 4;
    case ncclInt64: case ncclFloat64: return 8;
    default: return 0;
  }
}

bool on_device(const void* pointer, size_t count, ncclDataType_t type) {
  if (element_bytes(type) == 0) return false;  // a type this fake does not carry: refused, not garbled
  return count == 0 || sg_emu::is_device_memory(pointer, count * element_bytes(type));
}

#ifdef SG_MPI
float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
float to_float(__half x) { return __half2float(x); }
void store(__nv_bfloat16& x, float value) { x = __float2bfloat16_rn(value); }
void store(__half& x, float value) { x = __float2half_rn(value); }

// Sums rounded to 16 bits at each step, as NCCL's ring rounds at each hop.
template <typename Half>
void half_sum(void* in, void* inout, int* length, MPI_Datatype*) {
  const Half* a = static_cast<const Half*>(in);
  Half* b = static_cast<Half*>(inout);
  for (int i = 0; i < *length; ++i) store(b[i], to_float(a[i]) + to_float(b[i]));
}

MPI_Datatype mpi_type(ncclDataType_t type) {
  switch (type) {
    case ncclFloat16: case ncclBfloat16: return MPI_UINT16_T;
    case ncclInt32: return MPI_INT32_T;
    case ncclInt64: return MPI_INT64_T;
    case ncclFloat32: return MPI_FLOAT;
    case ncclFloat64: return MPI_DOUBLE;
    default: return MPI_DATATYPE_NULL;
  }
}

MPI_Op mpi_sum(ncclDataType_t type) {
  static MPI_Op bf16_sum = MPI_OP_NULL, f16_sum = MPI_OP_NULL;  // freed by MPI_Finalize
  if (type == ncclBfloat16) {
    if (bf16_sum == MPI_OP_NULL) MPI_Op_create(&half_sum<__nv_bfloat16>, 1, &bf16_sum);
    return bf16_sum;
  }
  if (type == ncclFloat16) {
    if (f16_sum == MPI_OP_NULL) MPI_Op_create(&half_sum<__half>, 1, &f16_sum);
    return f16_sum;
  }
  return MPI_SUM;
}

ncclResult_t mpi_result(int status) { return status == MPI_SUCCESS ? ncclSuccess : ncclSystemError; }
#endif

// One collective: its input as sent and its result, queued on its stream.
struct Collective {
  const char* name;
  cudaStream_t stream;
  const void* send;
  std::vector<char> input, result;

  // Runs the stream up to the call (its waits, earlier collectives' results),
  // then copies the input. In a world of one that is the result too; more
  // ranks exchange it over MPI into `result` (a build without MPI has no
  // such communicator: ncclCommInitRank refuses it).
  Collective(const char* name_, cudaStream_t stream_, ncclComm_t comm, const void* send_, size_t input_bytes,
             size_t result_bytes)
      : name(name_), stream(stream_), send(send_), result(result_bytes) {
    sg_emu::drain(stream);
    sg_emu::DeviceWork work(name);
    const char* from = static_cast<const char*>(send);
    if (input_bytes > 0) input.assign(from, from + input_bytes);
    if (comm->ranks == 1) result = input;
  }

  // Queues the result's landing in recv. Until it lands, the input is
  // watched: work that writes it is named (streams.cpp).
  ncclResult_t finish(void* recv) {
    auto sent = std::make_shared<const std::vector<char>>(std::move(input));
    auto landed = std::make_shared<const std::vector<char>>(std::move(result));
    const uint64_t watch = sent->empty() ? 0 : sg_emu::watch(send, sent, name);
    sg_emu::enqueue(stream, name, [watch, landed, recv] {
      if (watch != 0) sg_emu::unwatch(watch);
      std::memcpy(recv, landed->data(), landed->size());
    });
    return ncclSuccess;
  }
};

}  // namespace

extern "C" {

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error";
    case ncclInvalidArgument: return "invalid argument (emulator: a host pointer, or a count that does not fit?)";
    case ncclInvalidUsage: return "invalid usage (emulator: more than one rank needs MPI)";
    case ncclSystemError: return "system error (emulator: the MPI call failed)";
    default: return "unhandled NCCL error (emulator)";
  }
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  std::memset(id, 0, sizeof(*id));
  std::memcpy(id->internal, "sg-emu", 6);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  if (std::memcmp(id.internal, "sg-emu", 6) != 0 || nranks < 1 || rank < 0 || rank >= nranks) {
    return ncclInvalidArgument;  // an id that did not come from rank 0's ncclGetUniqueId
  }
  auto* c = new ncclComm{rank, nranks};
  if (nranks > 1) {
#ifdef SG_MPI
    int initialized = 0, size = 0, world_rank = 0;
    MPI_Initialized(&initialized);
    if (!initialized) return delete c, ncclInvalidUsage;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    if (size != nranks || world_rank != rank) return delete c, ncclInvalidUsage;
    MPI_Comm_dup(MPI_COMM_WORLD, &c->mpi);
#else
    return delete c, ncclInvalidUsage;
#endif
  }
  *comm = c;
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
#ifdef SG_MPI
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm->mpi != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm->mpi);
#endif
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t, ncclResult_t* error) {
  *error = ncclSuccess;
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
  if (!on_device(send, count, type) || !on_device(recv, count, type) || op != ncclSum) return ncclInvalidArgument;
  Collective c("ncclAllReduce", stream, comm, send, count * element_bytes(type), count * element_bytes(type));
#ifdef SG_MPI
  if (comm->ranks > 1) {
    const int status = MPI_Allreduce(c.input.data(), c.result.data(), int(count), mpi_type(type), mpi_sum(type),
                                     comm->mpi);
    if (status != MPI_SUCCESS) return mpi_result(status);
  }
#endif
  return c.finish(recv);
}

// recv holds ranks * sendcount elements; in place when send is this rank's slot of recv.
ncclResult_t ncclAllGather(const void* send, void* recv, size_t sendcount, ncclDataType_t type, ncclComm_t comm,
                           cudaStream_t stream) {
  const size_t bytes = sendcount * element_bytes(type);
  if (!on_device(send, sendcount, type) || !on_device(recv, sendcount * size_t(comm->ranks), type)) {
    return ncclInvalidArgument;
  }
  Collective c("ncclAllGather", stream, comm, send, bytes, bytes * size_t(comm->ranks));
#ifdef SG_MPI
  if (comm->ranks > 1) {
    const int status = MPI_Allgather(c.input.data(), int(sendcount), mpi_type(type), c.result.data(), int(sendcount),
                                     mpi_type(type), comm->mpi);
    if (status != MPI_SUCCESS) return mpi_result(status);
  }
#endif
  return c.finish(recv);
}

// send holds ranks * recvcount elements; recv gets this rank's summed slot.
ncclResult_t ncclReduceScatter(const void* send, void* recv, size_t recvcount, ncclDataType_t type, ncclRedOp_t op,
                               ncclComm_t comm, cudaStream_t stream) {
  const size_t bytes = recvcount * element_bytes(type);
  if (!on_device(send, recvcount * size_t(comm->ranks), type) || !on_device(recv, recvcount, type) || op != ncclSum) {
    return ncclInvalidArgument;
  }
  Collective c("ncclReduceScatter", stream, comm, send, bytes * size_t(comm->ranks), bytes);
#ifdef SG_MPI
  if (comm->ranks > 1) {
    const int status = MPI_Reduce_scatter_block(c.input.data(), c.result.data(), int(recvcount), mpi_type(type),
                                                mpi_sum(type), comm->mpi);
    if (status != MPI_SUCCESS) return mpi_result(status);
  }
#endif
  return c.finish(recv);
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t type, int root, ncclComm_t comm,
                           cudaStream_t stream) {
  if (!on_device(recv, count, type) || (comm->rank == root && !on_device(send, count, type)) || root < 0 ||
      root >= comm->ranks) {
    return ncclInvalidArgument;
  }
  const size_t bytes = count * element_bytes(type);
  const bool root_here = comm->rank == root;
  Collective c("ncclBroadcast", stream, comm, root_here ? send : nullptr, root_here ? bytes : 0, bytes);
#ifdef SG_MPI
  if (comm->ranks > 1) {
    if (root_here) c.result = c.input;
    const int status = MPI_Bcast(c.result.data(), int(count), mpi_type(type), root, comm->mpi);
    if (status != MPI_SUCCESS) return mpi_result(status);
  }
#endif
  return c.finish(recv);
}

}  // extern "C"
