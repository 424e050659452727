// Device parsing and the host/device byte copies every layer above uses.
#include "tensor/device.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

#include "kernels/error.h"
#include "tensor/copy_bytes.h"
#ifdef SG_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace sg {

Device parse_device(const std::string& text) {
  if (text == "cpu") return Device::cpu();
  if (text == "cuda") return Device::cuda(0);
  if (text.rfind("cuda:", 0) == 0) {
    const std::string digits = text.substr(5);
    bool numeric = !digits.empty() && digits.find_first_not_of("0123456789") == std::string::npos;
    SG_CHECK(numeric && digits.size() < 4, "cannot parse device '", text, "': expected cpu, cuda or cuda:N");
    return Device::cuda(std::stoi(digits));
  }
  SG_FAIL("cannot parse device '", text, "': expected cpu, cuda or cuda:N");
}

int cuda_device_count() {
#ifdef SG_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

bool cuda_available() { return cuda_device_count() > 0; }

DeviceMemory cuda_memory(Device device) {
#ifdef SG_CUDA
  if (device.is_cuda() && device.index < cuda_device_count()) {
    const cuda::MemoryInfo info = cuda::memory_info(device.index);
    return {info.free_bytes, info.total_bytes};
  }
#endif
  (void)device;
  return {};
}

namespace {

// The first number in `path` after `key` (the whole file when key is
// empty), times `unit`; -1 where the file or key is missing or the value is
// not a number (cgroup v2 writes "max" for no limit).
int64_t number_in_file(const char* path, const std::string& key, int64_t unit) {
  std::ifstream file(path);
  std::string line;
  while (std::getline(file, line)) {
    if (line.compare(0, key.size(), key) != 0) continue;
    std::istringstream rest(line.substr(key.size()));
    int64_t value = 0;
    return rest >> value ? value * unit : -1;
  }
  return -1;
}

}  // namespace

DeviceMemory host_memory() {
  const int64_t total = number_in_file("/proc/meminfo", "MemTotal:", 1024);
  const int64_t available = number_in_file("/proc/meminfo", "MemAvailable:", 1024);
  if (total <= 0 || available < 0) return {};
  // A container's limit, not the limit less its usage: the usage counts page
  // cache that the kernel drops before it kills anything.
  int64_t limit = number_in_file("/sys/fs/cgroup/memory.max", "", 1);
  if (limit <= 0) limit = number_in_file("/sys/fs/cgroup/memory/memory.limit_in_bytes", "", 1);
  const int64_t in_all = limit > 0 ? std::min(total, limit) : total;
  return {std::min(available, in_all), in_all};
}

void cuda_profiler_start() {
#ifdef SG_CUDA
  if (cuda_available()) cuda::profiler_start();
#endif
}

void cuda_profiler_stop() {
#ifdef SG_CUDA
  if (cuda_available()) cuda::profiler_stop();
#endif
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, int64_t bytes) {
  if (bytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, size_t(bytes));
    return;
  }
#ifdef SG_CUDA
  if (dst_device.is_cuda() && src_device.is_cpu()) return cuda::copy_host_to_device(dst, src, bytes, dst_device.index);
  if (dst_device.is_cpu() && src_device.is_cuda()) return cuda::copy_device_to_host(dst, src, bytes, src_device.index);
  return cuda::copy_device_to_device(dst, dst_device.index, src, src_device.index, bytes);
#else
  SG_FAIL("this build of shardgrad has no CUDA support; cannot copy between ", src_device.str(), " and ",
          dst_device.str());
#endif
}

}  // namespace sg
