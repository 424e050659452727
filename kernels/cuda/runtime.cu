#include "kernels/cuda/runtime.h"

#include <array>
#include <cstdio>
#include <mutex>

#include "kernels/cuda/cuda_check.h"

namespace sg::cuda {
namespace {

constexpr int kMaxDevices = 16;
std::array<cudaStream_t, kMaxDevices> g_streams{};
std::mutex g_stream_mutex;

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

void* device_malloc(int64_t bytes, int device) {
  set_device(device);
  void* pointer = nullptr;
  cudaError_t status = cudaMalloc(&pointer, size_t(bytes));
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    SG_FAIL("cudaMalloc of ", bytes, " bytes on cuda:", device, " failed: ", cudaGetErrorString(status), " (", free_bytes,
            " of ", total_bytes, " bytes free); reduce the batch size or use a higher ZeRO stage");
  }
  return pointer;
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

void synchronize(int device) { CUDA_CHECK(cudaStreamSynchronize(current_stream(device))); }

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
