// Where a tensor's memory lives: the host (CPU) or one CUDA GPU.
//
// Read next: tensor/allocator.h.
#pragma once

#include <cstdint>
#include <string>

namespace sg {

enum class DeviceKind : uint8_t { cpu, cuda };

struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;  // which GPU; always 0 for the CPU

  static Device cpu() { return Device{}; }
  static Device cuda(int index = 0) { return Device{DeviceKind::cuda, index}; }
  bool is_cpu() const { return kind == DeviceKind::cpu; }
  bool is_cuda() const { return kind == DeviceKind::cuda; }
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
  bool operator==(const Device&) const = default;
};

// Parses "cpu", "cuda" or "cuda:N" (as a command line flag would give it).
Device parse_device(const std::string& text);

// True when this build has CUDA and a GPU is visible at run time.
bool cuda_available();
// Around a region a profiler started with --profile-from-start off records;
// nothing without CUDA.
void cuda_profiler_start();
void cuda_profiler_stop();
int cuda_device_count();
// A GPU's memory as its driver reports it (cudaMemGetInfo): free now, and
// in all. Zeros for the CPU or without CUDA.
struct DeviceMemory {
  int64_t free_bytes = 0, total_bytes = 0;
};
DeviceMemory cuda_memory(Device device);
// The host's memory as the kernel reports it: free is what can be allocated
// without swapping (/proc/meminfo's MemAvailable: free pages and the page
// cache it would drop), in all is MemTotal; a container's memory limit
// (cgroup v2's memory.max, v1's memory.limit_in_bytes) caps both. Zeros
// where the system has no /proc/meminfo.
DeviceMemory host_memory();

}  // namespace sg
