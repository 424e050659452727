// The NCCL backend for CUDA tensors.
//
// Streams: NCCL runs on a communication stream of its own, so a collective
// can overlap the compute stream's kernels. Ordering is by events: before a
// collective, the communication stream waits for an event recorded on the
// compute stream (the inputs are ready); after it, an event on the
// communication stream marks completion, which Work::wait() polls (so a
// missing rank becomes a timeout error, not a hang).
//
// The NCCL unique id is created by rank 0 and broadcast over the bootstrap
// (MPI) communicator; every rank then joins with ncclCommInitRank.
//
// Not yet run on a GPU (see docs/performance.md); it runs in every CI pass
// against the emulator's NCCL over MPI (docs/cuda-emulator.md).
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "dist/backends.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/runtime.h"

namespace sg {
namespace {

#define NCCL_CHECK(call)                                                                              \
  do {                                                                                                \
    ncclResult_t status_ = (call);                                                                    \
    if (status_ != ncclSuccess) {                                                                     \
      SG_FAIL(#call, " failed: ", ncclGetErrorString(status_), " (", __FILE__, ":", __LINE__, ")");    \
    }                                                                                                 \
  } while (0)

ncclDataType_t nccl_type(const Tensor& t) {
  switch (t.dtype()) {
    case DType::f32: return ncclFloat32;
    case DType::bf16: return ncclBfloat16;
    case DType::f16: return ncclFloat16;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
    case DType::f64: return ncclFloat64;
  }
  return ncclFloat32;
}

// Buffers of collectives dropped before completion: NCCL may still write
// them, so they are never freed (see the MPI backend).
std::vector<std::vector<Tensor>>& abandoned_buffers() {
  static auto* buffers = new std::vector<std::vector<Tensor>>();
  return *buffers;
}

// How wait() learns that a collective is done (SG_NCCL_WAIT):
//   host (default): the host polls the completion event, so a rank that never
//     joins becomes the communicator's timeout error, not a hang;
//   device: the compute stream waits on the event and wait() returns at once,
//     so the host keeps queuing kernels while NCCL runs; a missing rank then
//     hangs the GPU (NCCL's own errors are still reported). The tensors may
//     go back to the caching allocator at once: whatever reuses them is
//     queued on the compute stream behind the wait, or on NCCL's stream.
bool device_side_wait() {
  static const bool device = [] {
    const char* setting = std::getenv("SG_NCCL_WAIT");
    const std::string mode = setting ? setting : "host";
    SG_CHECK(mode == "host" || mode == "device", "SG_NCCL_WAIT must be host or device, got '", mode, "'");
    return mode == "device";
  }();
  return device;
}

class NcclWork : public Work {
 public:
  NcclWork(cudaEvent_t done, ncclComm_t comm, std::vector<Tensor> keep_alive, cudaStream_t compute)
      : done_event_(done), comm_(comm), keep_alive_(std::move(keep_alive)), compute_(compute) {}
  ~NcclWork() override {
    if (!keep_alive_.empty() && cudaEventQuery(done_event_) != cudaSuccess) {
      abandoned_buffers().push_back(std::move(keep_alive_));
    }
    cudaEventDestroy(done_event_);
  }

 protected:
  bool test() override {
    ncclResult_t async_error = ncclSuccess;
    NCCL_CHECK(ncclCommGetAsyncError(comm_, &async_error));
    NCCL_CHECK(async_error);
    if (device_side_wait()) {
      CUDA_CHECK(cudaStreamWaitEvent(compute_, done_event_, 0));
      keep_alive_.clear();
      return true;
    }
    cudaError_t status = cudaEventQuery(done_event_);
    if (status == cudaErrorNotReady) return false;
    CUDA_CHECK(status);
    keep_alive_.clear();
    return true;
  }

 private:
  cudaEvent_t done_event_;
  ncclComm_t comm_;
  std::vector<Tensor> keep_alive_;
  cudaStream_t compute_;
};

class NcclBackend : public Backend {
 public:
  NcclBackend(Communicator& bootstrap, int device) : device_(device) {
    ncclUniqueId id;
    Tensor id_bytes = Tensor::zeros({int64_t(sizeof(id) + 7) / 8}, TensorOptions().dtype(DType::i64));
    if (bootstrap.rank() == 0) {
      NCCL_CHECK(ncclGetUniqueId(&id));
      std::memcpy(id_bytes.data_ptr(), &id, sizeof(id));
    }
    bootstrap.broadcast(id_bytes, 0)->wait();
    std::memcpy(&id, id_bytes.data_ptr(), sizeof(id));
    CUDA_CHECK(cudaSetDevice(device));
    NCCL_CHECK(ncclCommInitRank(&comm_, bootstrap.world_size(), id, bootstrap.rank()));
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~NcclBackend() override {
    ncclCommDestroy(comm_);
    cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "nccl"; }

  WorkHandle all_gather(Tensor& output, const Tensor& input) override {
    check_device("all_gather", output), check_device("all_gather", input);
    begin();
    NCCL_CHECK(ncclAllGather(input.data_ptr(), output.data_ptr(), size_t(input.numel()), nccl_type(input), comm_, stream_));
    return end({output, input});
  }
  WorkHandle reduce_scatter(Tensor& output, const Tensor& input) override {
    check_device("reduce_scatter", output), check_device("reduce_scatter", input);
    begin();
    NCCL_CHECK(ncclReduceScatter(input.data_ptr(), output.data_ptr(), size_t(output.numel()), nccl_type(input), ncclSum,
                                 comm_, stream_));
    return end({output, input});
  }
  WorkHandle all_reduce(Tensor& tensor) override {
    check_device("all_reduce", tensor);
    begin();
    NCCL_CHECK(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), size_t(tensor.numel()), nccl_type(tensor), ncclSum,
                             comm_, stream_));
    return end({tensor});
  }
  WorkHandle broadcast(Tensor& tensor, int root) override {
    check_device("broadcast", tensor);
    begin();
    NCCL_CHECK(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), size_t(tensor.numel()), nccl_type(tensor), root,
                             comm_, stream_));
    return end({tensor});
  }
  WorkHandle barrier() override { SG_FAIL("barrier() runs on the CPU backend"); }

 private:
  // The communicator and its streams belong to one GPU. A tensor on another
  // would be ordered by that GPU's stream, not this one's: NCCL could read
  // it before it is written (the emulator's lazy streams found tests doing
  // this), or fail outright.
  void check_device(const char* op, const Tensor& t) const {
    SG_CHECK(t.device() == Device::cuda(device_), op, ": this rank's NCCL communicator runs on cuda:", device_,
             ", but the tensor ", t.str(), " is on ", t.device().str(),
             "; put each rank's CUDA tensors on sg::local_cuda_device() (GPU local_rank % GPUs)");
  }

  // The communication stream waits for everything already queued on the
  // compute stream: the collective's inputs are written there.
  void begin() {
    cudaStream_t compute = cuda::current_stream(device_);
    cudaEvent_t ready;
    CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventRecord(ready, compute));
    CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0));
    CUDA_CHECK(cudaEventDestroy(ready));  // destruction is deferred until the event completes
  }
  WorkHandle end(std::vector<Tensor> keep_alive) {
    cudaEvent_t done;
    CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventRecord(done, stream_));
    return std::make_shared<NcclWork>(done, comm_, std::move(keep_alive), cuda::current_stream(device_));
  }

  int device_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::unique_ptr<Backend> make_nccl_backend(Communicator& bootstrap, int device) {
  return std::make_unique<NcclBackend>(bootstrap, device);
}

}  // namespace sg
