#include "kernels/cuda/runtime.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <mutex>
#include <vector>

#include <cuda_profiler_api.h>

#include "kernels/cuda/cuda_check.h"

namespace sg::cuda {
namespace {

constexpr int kMaxDevices = 16;
std::array<cudaStream_t, kMaxDevices> g_streams{};
std::mutex g_stream_mutex;

// Pinned buffers of asynchronous copies (both ways), held until their copy is done.
struct PendingCopy {
  cudaEvent_t done;
  std::shared_ptr<const void> keep_alive;
};
std::mutex g_copy_mutex;
// Never destroyed: at exit the CUDA runtime may already be unloaded, and
// releasing a pinned buffer then fails (the emulator found this).
std::vector<PendingCopy>& g_copies = *new std::vector<PendingCopy>;

void release_finished_copies() {  // with g_copy_mutex held
  auto finished = std::remove_if(g_copies.begin(), g_copies.end(), [](PendingCopy& copy) {
    if (cudaEventQuery(copy.done) != cudaSuccess) return false;  // not yet (or an error, reported elsewhere)
    cudaEventDestroy(copy.done);
    return true;
  });
  g_copies.erase(finished, g_copies.end());
}

// Holds keep_alive (a pinned buffer's owner) until the stream has done what
// is queued on it now.
void hold_until_done(cudaStream_t stream, std::shared_ptr<const void> keep_alive) {
  cudaEvent_t done;
  CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventRecord(done, stream));
  std::lock_guard<std::mutex> lock(g_copy_mutex);
  release_finished_copies();
  g_copies.push_back(PendingCopy{done, std::move(keep_alive)});
}

void set_device(int device) {
  SG_CHECK(device >= 0 && device < kMaxDevices, "cuda:", device, " is out of range");
  int current = -1;
  CUDA_CHECK(cudaGetDevice(&current));
  if (current != device) CUDA_CHECK(cudaSetDevice(device));
}

}  // namespace

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return count;
}

void* try_device_malloc(int64_t bytes, int device) {
  set_device(device);
  void* pointer = nullptr;
  cudaError_t status = cudaMalloc(&pointer, size_t(bytes));
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // not sticky: clear it and let the caller decide
    return nullptr;
  }
  CUDA_CHECK(status);
  return pointer;
}

MemoryInfo memory_info(int device) {
  set_device(device);
  size_t free_bytes = 0, total_bytes = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return MemoryInfo{int64_t(free_bytes), int64_t(total_bytes)};
}

void* pinned_malloc(int64_t bytes) {
  void* pointer = nullptr;
  cudaError_t status = cudaMallocHost(&pointer, size_t(bytes));
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    SG_FAIL("cudaMallocHost of ", bytes, " bytes of pinned host memory failed: ", cudaGetErrorString(status),
            "; the machine may limit locked memory (ulimit -l)");
  }
  return pointer;
}

void pinned_free(void* pointer) noexcept {
  if (cudaFreeHost(pointer) != cudaSuccess) {
    std::fprintf(stderr, "shardgrad: cudaFreeHost failed: %s\n", cudaGetErrorString(cudaGetLastError()));
  }
}

void device_free(void* pointer, int device) noexcept {
  // Called from destructors: report, never throw.
  if (cudaSetDevice(device) != cudaSuccess || cudaFree(pointer) != cudaSuccess) {
    std::fprintf(stderr, "shardgrad: cudaFree on cuda:%d failed: %s\n", device, cudaGetErrorString(cudaGetLastError()));
  }
}

cudaStream_t current_stream(int device) {
  set_device(device);
  std::lock_guard<std::mutex> lock(g_stream_mutex);
  if (g_streams[size_t(device)] == nullptr) {
    CUDA_CHECK(cudaStreamCreateWithFlags(&g_streams[size_t(device)], cudaStreamNonBlocking));
  }
  return g_streams[size_t(device)];
}

void profiler_start() { CUDA_CHECK(cudaProfilerStart()); }
void profiler_stop() { CUDA_CHECK(cudaProfilerStop()); }

void synchronize(int device) {
  CUDA_CHECK(cudaStreamSynchronize(current_stream(device)));
  std::lock_guard<std::mutex> lock(g_copy_mutex);
  release_finished_copies();
}

void copy_host_to_device_async(void* dst, const void* src, int64_t bytes, int device,
                               std::shared_ptr<const void> keep_alive) {
  cudaStream_t stream = current_stream(device);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, size_t(bytes), cudaMemcpyHostToDevice, stream));
  hold_until_done(stream, std::move(keep_alive));
}

std::shared_ptr<void> copy_device_to_host_async(void* dst, const void* src, int64_t bytes, int device,
                                                std::shared_ptr<const void> keep_alive) {
  cudaStream_t stream = current_stream(device);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, size_t(bytes), cudaMemcpyDeviceToHost, stream));
  hold_until_done(stream, std::move(keep_alive));  // should the reader never wait, the buffer still outlives the copy
  cudaEvent_t landed;
  CUDA_CHECK(cudaEventCreateWithFlags(&landed, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventRecord(landed, stream));
  return std::shared_ptr<void>(landed, [](void* event) { cudaEventDestroy(static_cast<cudaEvent_t>(event)); });
}

void wait_for(const std::shared_ptr<void>& event) {
  CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event.get())));
}

void fill_bytes_async(void* dst, int value, int64_t bytes, int device) {
  CUDA_CHECK(cudaMemsetAsync(dst, value, size_t(bytes), current_stream(device)));
}

void copy_host_to_device(void* dst, const void* src, int64_t bytes, int device) {
  cudaStream_t stream = current_stream(device);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, size_t(bytes), cudaMemcpyHostToDevice, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

void copy_device_to_host(void* dst, const void* src, int64_t bytes, int device) {
  cudaStream_t stream = current_stream(device);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, size_t(bytes), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

void copy_device_to_device(void* dst, int dst_device, const void* src, int src_device, int64_t bytes) {
  cudaStream_t stream = current_stream(src_device);
  if (dst_device == src_device) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, size_t(bytes), cudaMemcpyDeviceToDevice, stream));
  } else {
    CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_device, src, src_device, size_t(bytes), stream));
  }
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace sg::cuda
