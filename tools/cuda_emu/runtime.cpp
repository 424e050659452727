// The CUDA runtime calls shardgrad makes, done on the host for the emulator
// (tools/cuda_emu/simt.h). Linked instead of libcudart; the declarations come
// from the toolkit's own cuda_runtime_api.h, so the signatures are checked.
//
// Streams and events are in streams.cpp: a copy on a stream is queued there
// and runs at once or as late as allowed (SG_EMU_STREAMS). This file checks:
//  - an index past the end of device memory: each cudaMalloc'd buffer ends
//    (16-byte aligned, as the start is) at an unmapped page, or starts right
//    after one with SG_EMU_GUARD=front (guarded_memory.h);
//  - a read of memory nothing wrote: new buffers are filled with 0xff bytes,
//    NaN in f32, bf16 and f16;
//  - a copy whose direction names the wrong kind of pointer (a host pointer
//    passed as device memory, or the other way round);
//  - a device running out of memory: each emulated GPU has
//    SG_EMU_DEVICE_MEMORY bytes (default 8 GiB), so the allocator's
//    out-of-memory path runs. SG_EMU_DEVICES sets how many GPUs (default 1).
#include <cuda_runtime_api.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tools/cuda_emu/guarded_memory.h"
#include "tools/cuda_emu/runtime.h"
#include "tools/cuda_emu/simt.h"

namespace {

struct Allocation {
  sg_emu::GuardedMapping memory;
  size_t bytes;
  int device;
};

// Never destroyed, as the real runtime's state outlives static destructors
// that free memory.
std::mutex& g_mutex = *new std::mutex;
std::map<uintptr_t, Allocation>& g_device_memory = *new std::map<uintptr_t, Allocation>;  // by start address
std::map<uintptr_t, size_t>& g_pinned = *new std::map<uintptr_t, size_t>;
size_t g_used[64] = {};
thread_local int g_current_device = 0;

int64_t env_number(const char* name, int64_t fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::strtoll(value, nullptr, 10) : fallback;
}

int device_count() { return int(env_number("SG_EMU_DEVICES", 1)); }
size_t device_capacity() { return size_t(env_number("SG_EMU_DEVICE_MEMORY", int64_t(8) << 30)); }

// The device allocation holding [pointer, pointer + bytes), or nullptr.
const Allocation* find_device(const void* pointer, size_t bytes) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(pointer);
  auto it = g_device_memory.upper_bound(address);
  if (it == g_device_memory.begin()) return nullptr;
  --it;
  const Allocation& allocation = it->second;
  return address + bytes <= it->first + allocation.bytes ? &allocation : nullptr;
}

// The whole pages of an allocation: what opens and closes to the host.
void pages_of(const Allocation& a, char** start, size_t* bytes) {
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t first = reinterpret_cast<uintptr_t>(a.memory.data) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(a.memory.data) + a.bytes + page - 1) / page * page;
  *start = reinterpret_cast<char*>(first);
  *bytes = size_t(end - first);
}

// What this thread's device work opened (fixed storage: filled by the fault
// handler, which must not allocate).
struct Opened {
  const char* data;  // the allocation's
  char* start;       // its pages
  size_t bytes;
};
constexpr int kMaxOpened = 4096;
thread_local Opened t_opened[kMaxOpened];
thread_local int t_opened_count = 0;

bool is_device(const void* pointer, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_mutex);
  return find_device(pointer, bytes) != nullptr;
}

// Inside some device allocation at all (a host range must not overlap one).
bool touches_device(const void* pointer) { return is_device(pointer, 1); }

// Inside one cudaMallocHost'd buffer.
bool is_pinned(const void* pointer, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_mutex);
  const uintptr_t address = reinterpret_cast<uintptr_t>(pointer);
  auto it = g_pinned.upper_bound(address);
  if (it == g_pinned.begin()) return false;
  --it;
  return address + bytes <= it->first + it->second;
}

// shardgrad always names the direction (never cudaMemcpyDefault), so each
// side is checked against it.
cudaError_t check_copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (bytes == 0) return cudaSuccess;
  const bool dst_ok = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice ? is_device(dst, bytes)
                                                                                        : !touches_device(dst);
  const bool src_ok = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice ? is_device(src, bytes)
                                                                                        : !touches_device(src);
  return kind == cudaMemcpyDefault || !dst_ok || !src_ok ? cudaErrorInvalidValue : cudaSuccess;
}

cudaError_t copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  const cudaError_t status = check_copy(dst, src, bytes, kind);
  if (status == cudaSuccess && bytes > 0) {
    sg_emu::DeviceWork work("cudaMemcpy");
    std::memmove(dst, src, bytes);
  }
  return status;
}

}  // namespace

bool sg_emu::is_device_memory(const void* pointer, size_t bytes) { return is_device(pointer, bytes); }

bool sg_emu::open_device_memory(const void* address) {
  std::lock_guard<std::mutex> lock(g_mutex);
  const Allocation* allocation = find_device(address, 1);
  if (allocation == nullptr || t_opened_count == kMaxOpened) return false;
  Opened& opened = t_opened[t_opened_count];
  opened.data = allocation->memory.data;
  pages_of(*allocation, &opened.start, &opened.bytes);
  if (mprotect(opened.start, opened.bytes, PROT_READ | PROT_WRITE) != 0) return false;
  ++t_opened_count;
  return true;
}

void sg_emu::close_device_memory() {
  std::lock_guard<std::mutex> lock(g_mutex);
  for (int i = 0; i < t_opened_count; ++i) {
    // Only what is still allocated (another thread may have freed it).
    if (find_device(t_opened[i].data, 1) != nullptr) mprotect(t_opened[i].start, t_opened[i].bytes, PROT_NONE);
  }
  t_opened_count = 0;
}

extern "C" {

// The region a profiler would watch is where the census counts (census.cpp).
cudaError_t cudaProfilerStart() {
  sg_emu::census_start();
  return cudaSuccess;
}
cudaError_t cudaProfilerStop() {
  sg_emu::census_stop();
  return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int* count) {
  *count = device_count();
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= device_count()) return cudaErrorInvalidDevice;
  g_current_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  *device = g_current_device;
  return cudaSuccess;
}

// Each emulated device plays an H100 (compute capability 9.0), whose limits
// the emulator checks (227 KiB of shared memory a block) and whose wgmma it
// emulates (wgmma.h). Only what shardgrad asks is answered.
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int device) {
  if (device < 0 || device >= device_count()) return cudaErrorInvalidDevice;
  switch (attribute) {
    case cudaDevAttrComputeCapabilityMajor: *value = 9; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; return cudaSuccess;
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t cudaGetLastError() { return cudaSuccess; }  // launch errors throw at once in the emulator

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument (emulator: a pointer of the wrong kind for this copy?)";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    default: return "unknown error (emulator)";
  }
}

cudaError_t cudaMalloc(void** pointer, size_t bytes) {
  sg_emu::count_device_allocation();
  std::lock_guard<std::mutex> lock(g_mutex);
  const int device = g_current_device;
  if (g_used[device] + bytes > device_capacity()) return cudaErrorMemoryAllocation;
  const sg_emu::GuardedMapping memory = sg_emu::map_guarded(bytes, 16);
  if (memory.data == nullptr) return cudaErrorMemoryAllocation;
  char* data = memory.data;
  std::memset(data, 0xff, bytes);
  const Allocation& allocation = g_device_memory[reinterpret_cast<uintptr_t>(data)] = Allocation{memory, bytes, device};
  char* start = nullptr;
  size_t pages = 0;
  pages_of(allocation, &start, &pages);
  mprotect(start, pages, PROT_NONE);  // closed to host code; device work opens it (simt.h's DeviceWork)
  sg_emu::install_fault_handler();
  g_used[device] += bytes;
  *pointer = data;
  return cudaSuccess;
}

// cudaFree synchronizes the device first, as the real one does.
cudaError_t cudaFree(void* pointer) {
  if (pointer == nullptr) return cudaSuccess;
  sg_emu::count_host_wait();
  sg_emu::drain_all();
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_device_memory.find(reinterpret_cast<uintptr_t>(pointer));
  if (it == g_device_memory.end()) return cudaErrorInvalidValue;
  g_used[it->second.device] -= it->second.bytes;
  sg_emu::unmap(it->second.memory);
  g_device_memory.erase(it);
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  std::lock_guard<std::mutex> lock(g_mutex);
  *total_bytes = device_capacity();
  *free_bytes = *total_bytes - g_used[g_current_device];
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** pointer, size_t bytes) {
  *pointer = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  if (*pointer == nullptr) return cudaErrorMemoryAllocation;
  std::lock_guard<std::mutex> lock(g_mutex);
  g_pinned[reinterpret_cast<uintptr_t>(*pointer)] = bytes;
  return cudaSuccess;
}

cudaError_t cudaFreeHost(void* pointer) {
  if (pointer == nullptr) return cudaSuccess;
  sg_emu::count_host_wait();
  sg_emu::drain_all();  // as cudaFree: no queued copy may outlive its pinned buffer
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_pinned.erase(reinterpret_cast<uintptr_t>(pointer)) == 0) return cudaErrorInvalidValue;
  std::free(pointer);
  return cudaSuccess;
}

// The legacy default stream does not wait for shardgrad's non-blocking
// streams: the copy runs now.
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  sg_emu::count_host_wait();
  return copy(dst, src, bytes, kind);
}

// The pointers are checked now (the call's error); the bytes move when the
// stream gets there. With pageable (not pinned) host memory CUDA is partly
// synchronous, and so is this: an upload reads its source during the call,
// a download waits for the stream and is done when the call returns.
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  const cudaError_t status = check_copy(dst, src, bytes, kind);
  if (status != cudaSuccess || bytes == 0) return status;
  if (kind == cudaMemcpyHostToDevice && !is_pinned(src, bytes)) {
    const char* from = static_cast<const char*>(src);
    auto staged = std::make_shared<std::vector<char>>(from, from + bytes);
    sg_emu::enqueue(stream, "cudaMemcpyAsync (upload)", [=] { std::memcpy(dst, staged->data(), bytes); });
  } else if (kind == cudaMemcpyDeviceToHost && !is_pinned(dst, bytes)) {
    sg_emu::count_host_wait();
    sg_emu::drain(stream);
    sg_emu::DeviceWork work("cudaMemcpyAsync (download)");
    std::memcpy(dst, src, bytes);
  } else {
    sg_emu::enqueue(stream, "cudaMemcpyAsync", [=] { std::memmove(dst, src, bytes); });
  }
  return status;
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  if (!is_device(dst, bytes)) return cudaErrorInvalidValue;
  sg_emu::enqueue(stream, "cudaMemsetAsync", [=] { std::memset(dst, value, bytes); });
  return cudaSuccess;
}

cudaError_t cudaMemcpyPeerAsync(void* dst, int, const void* src, int, size_t bytes, cudaStream_t stream) {
  return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream);
}

}  // extern "C"
