// What the emulator's host runtime (runtime.cpp, streams.cpp) tells its
// other fakes.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace sg_emu {

// True when [pointer, pointer + bytes) lies inside one cudaMalloc'd buffer.
bool is_device_memory(const void* pointer, size_t bytes);

// Device memory is closed (PROT_NONE) to host code: a CUDA tensor's bytes
// read on the CPU fault, as they do with a real GPU. Emulated device work
// (simt.h's DeviceWork) opens a buffer on its first touch: the fault handler
// calls open_device_memory, which opens the buffer holding `address` and
// returns true (false: not device memory). close_device_memory closes what
// this thread opened.
bool open_device_memory(const void* address);
void close_device_memory();

// Streams (streams.cpp). Every piece of device work (a kernel, a copy, a
// GEMM, a collective's result) is queued on its stream; SG_EMU_STREAMS says
// when it runs: at once (eager, the default) or as late as the program's
// synchronization allows (lazy).
bool lazy_streams();
void set_lazy_streams(bool lazy);  // for the emulator's own tests; runs what is queued first
// Queues `work` on `stream`; the legacy default stream (nullptr) runs it now.
// `what` names it in errors.
void enqueue(cudaStream_t stream, const char* what, std::function<void()> work);
// Runs everything queued on `stream`, and on the streams it waits for.
void drain(cudaStream_t stream);
// Until unwatch(id), every piece of queued work that runs is checked not to
// have changed `expected->size()` bytes at `data` from `expected`: the input
// of a collective (`reader`) in flight. Returns the id.
uint64_t watch(const void* data, std::shared_ptr<const std::vector<char>> expected, const char* reader);
void unwatch(uint64_t id);
// What the host asked of the device so far, for tests of how often a
// training step stalls on it:
struct Counters {
  // Calls that block the host until device work is done (stream
  // synchronization, downloads into pageable memory, cudaMemcpy, and
  // cudaFree/cudaFreeHost, which synchronize the device), counted when
  // device work was queued since the last one: a download followed by a
  // stream synchronization is one round trip. An event query does not
  // block and is not counted, nor is waiting for an event recorded before
  // the host's last wait (streams.cpp, cudaEventSynchronize).
  int64_t host_waits = 0;
  int64_t device_allocations = 0;  // cudaMalloc calls (the caching allocator should make these rare)
};
Counters counters();
void count_host_wait();
void count_device_allocation();
// The census (census.cpp): between cudaProfilerStart and cudaProfilerStop,
// every piece of work queued (enqueue) is counted by short_name(what), and
// the counts are written to the file SG_EMU_CENSUS names.
void census_start();
void census_stop();
void census_count(const char* what);
// A kernel's name without namespaces or template arguments.
std::string short_name(const char* what);
// Runs everything queued anywhere (what cudaFree's implicit device
// synchronization does).
void drain_all();

}  // namespace sg_emu
