// The CUDA runtime pieces tensor/ needs: device count, memory, copies and the
// stream each device's kernels run on. Declared for g++; implemented in
// runtime.cu.
//
// One stream per device (created non-blocking on first use) carries every
// kernel and copy that shardgrad issues, so they run in issue order without
// synchronizing with other libraries' work on the legacy default stream.
//
// Read next: kernels/cuda/elementwise.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

namespace sg::cuda {

int device_count();  // 0 when there is no driver or no GPU; never throws

// cudaMalloc, or nullptr when the device is out of memory (tensor/allocator.cpp
// then empties its cache and tries again); other failures throw.
void* try_device_malloc(int64_t bytes, int device);
void device_free(void* pointer, int device) noexcept;

struct MemoryInfo {
  int64_t free_bytes = 0, total_bytes = 0;
};
MemoryInfo memory_info(int device);

// Page-locked host memory: the DMA engines copy it without a bounce buffer,
// and copies from it can run asynchronously. Staging for host<->device
// transfers (the MPI backend's CUDA tensors, batches of tokens).
void* pinned_malloc(int64_t bytes);
void pinned_free(void* pointer) noexcept;

// A host-to-device copy from pinned memory that returns at once: the copy
// runs in stream order, and keep_alive (the pinned buffer's owner) is held
// until an event says the copy is done, so the buffer cannot be reused
// under it. No wait for the GPU to drain, as a synchronous copy would.
void copy_host_to_device_async(void* dst, const void* src, int64_t bytes, int device,
                               std::shared_ptr<const void> keep_alive);

// The other way, into pinned memory, also returning at once: the bytes land
// when the stream gets there. Returns an event recorded after the copy;
// wait_for(event) waits for the copy and what was queued before it, not for
// what the host queued since (tensor/pending_read.h).
std::shared_ptr<void> copy_device_to_host_async(void* dst, const void* src, int64_t bytes, int device,
                                                std::shared_ptr<const void> keep_alive);
void wait_for(const std::shared_ptr<void>& event);

// Copies issued on the device's stream; each returns once the bytes have landed.
void copy_host_to_device(void* dst, const void* src, int64_t bytes, int device);
void copy_device_to_host(void* dst, const void* src, int64_t bytes, int device);
void copy_device_to_device(void* dst, int dst_device, const void* src, int src_device, int64_t bytes);

// Sets `bytes` bytes at dst to `value`, in the device's stream order
// (SG_POISON's fill of device memory; tensor/allocator.h).
void fill_bytes_async(void* dst, int value, int64_t bytes, int device);

// Makes `device` current and returns its stream.
cudaStream_t current_stream(int device);
void synchronize(int device);

// Bracket what a profiler started with --profile-from-start off records
// (ncu, nsys): bench_gpt's last step, without the model's initialisation.
void profiler_start();
void profiler_stop();

}  // namespace sg::cuda
