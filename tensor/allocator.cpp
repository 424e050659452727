// Storage allocation and the per-device, per-category byte counters.
// CPU memory is 64-byte aligned (one cache line; what AVX-512 loads want).
// CUDA memory comes from cudaMalloc through kernels/cuda/runtime.h.
//
// Freed host blocks are kept for reuse (HostCache below) instead of going
// back to the C library: a training step allocates the same sizes every
// step, and glibc serves large blocks with fresh pages from mmap, which the
// kernel zeroes on first touch (a sixth of a GPT-2 124M CPU step was the
// kernel's clear_page). The counters count live tensors only; the cache's
// bytes are reported apart (host_cache_bytes()).
#include "tensor/allocator.h"

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/error.h"
#ifdef SG_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace sg {
namespace {

constexpr int kMaxCudaDevices = 16;

struct Tracker {
  std::mutex mutex;
  std::array<MemoryStats, 1 + kMaxCudaDevices> devices{};  // slot 0: cpu

  MemoryStats& slot(Device device) {
    if (device.is_cpu()) return devices[0];
    SG_CHECK(device.index >= 0 && device.index < kMaxCudaDevices, "device index ", device.index,
             " is out of range: shardgrad counts memory for cuda:0 to cuda:", kMaxCudaDevices - 1);
    return devices[size_t(1 + device.index)];
  }

  void add(Device device, MemoryCategory category, int64_t bytes) {
    std::lock_guard<std::mutex> lock(mutex);
    MemoryStats& stats = slot(device);
    ByteCounter& counter = stats.categories[size_t(category)];
    counter.live += bytes;
    stats.total.live += bytes;
    if (bytes > 0) {
      ++stats.allocations;
      counter.peak = std::max(counter.peak, counter.live);
      stats.total.peak = std::max(stats.total.peak, stats.total.live);
    }
  }
};

Tracker& tracker() {
  static Tracker* instance = new Tracker();  // never destroyed: tensors may outlive static teardown
  return *instance;
}

// Host blocks by exact (64-byte rounded) size. The cache holds at most as
// many bytes as were ever live at once (at least 256 MiB), so it at most
// doubles the footprint of a program's busiest moment; SG_CPU_CACHE=0 turns
// it off (every free goes back to the C library at once).
class HostCache {
 public:
  void* take(size_t bytes) {
    if (!enabled_) return nullptr;
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.find(bytes);
    if (it == free_.end() || it->second.empty()) return nullptr;
    void* data = it->second.back();
    it->second.pop_back();
    cached_ -= bytes;
    return data;
  }
  // False when the block is not kept (the caller frees it).
  bool keep(void* data, size_t bytes, int64_t peak_live) {
    if (!enabled_) return false;
    std::lock_guard<std::mutex> lock(mutex_);
    if (cached_ + bytes > size_t(std::max<int64_t>(peak_live, int64_t(256) << 20))) return false;
    free_[bytes].push_back(data);
    cached_ += bytes;
    return true;
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [bytes, blocks] : free_) {
      for (void* data : blocks) std::free(data);
    }
    free_.clear();
    cached_ = 0;
  }
  int64_t cached() {
    std::lock_guard<std::mutex> lock(mutex_);
    return int64_t(cached_);
  }

 private:
  bool enabled_ = [] {
    const char* setting = std::getenv("SG_CPU_CACHE");
    return setting == nullptr || std::string(setting) != "0";
  }();
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0;
};

HostCache& host_cache() {
  static HostCache* instance = new HostCache();  // never destroyed, like the tracker
  return *instance;
}

}  // namespace

std::string_view category_name(MemoryCategory category) {
  switch (category) {
    case MemoryCategory::parameter: return "parameter";
    case MemoryCategory::gradient: return "gradient";
    case MemoryCategory::optimizer_state: return "optimizer_state";
    case MemoryCategory::activation: return "activation";
    case MemoryCategory::communication: return "communication";
    case MemoryCategory::other: return "other";
  }
  return "?";
}

MemoryStats memory_stats(Device device) {
  Tracker& t = tracker();
  std::lock_guard<std::mutex> lock(t.mutex);
  return t.slot(device);
}

int64_t host_cache_bytes() { return host_cache().cached(); }

void empty_host_cache() { host_cache().clear(); }

void reset_peak_memory(Device device) {
  Tracker& t = tracker();
  std::lock_guard<std::mutex> lock(t.mutex);
  MemoryStats& stats = t.slot(device);
  for (ByteCounter& counter : stats.categories) counter.peak = counter.live;
  stats.total.peak = stats.total.live;
  stats.allocations = 0;
}

std::shared_ptr<Storage> Storage::allocate(int64_t bytes, Device device, MemoryCategory category) {
  SG_CHECK(bytes >= 0, "cannot allocate a negative number of bytes (", bytes, ")");
  void* data = nullptr;
  if (bytes > 0) {
    if (device.is_cpu()) {
      size_t rounded = (size_t(bytes) + 63) / 64 * 64;
      data = host_cache().take(rounded);
      if (data == nullptr) data = std::aligned_alloc(64, rounded);
      SG_CHECK(data != nullptr, "out of host memory allocating ", bytes, " bytes for ",
               category_name(category), "; live host bytes: ", memory_stats(device).total.live);
    } else {
#ifdef SG_CUDA
      int visible = cuda::device_count();
      SG_CHECK(device.index < visible, "cannot allocate on ", device.str(), ": this machine has ", visible,
               " CUDA device(s) visible; keep tensors on Device::cpu() or check CUDA_VISIBLE_DEVICES");
      data = cuda::device_malloc(bytes, device.index);
#else
      SG_FAIL("this build of shardgrad has no CUDA support; reconfigure with -DSG_CUDA=ON on a machine "
              "with the CUDA toolkit to use ", device.str());
#endif
    }
  }
  tracker().add(device, category, bytes);
  return std::shared_ptr<Storage>(new Storage(data, bytes, device, category));
}

Storage::~Storage() {
  if (data_ != nullptr) {
    if (device_.is_cpu()) {
      const size_t rounded = (size_t(bytes_) + 63) / 64 * 64;
      if (!host_cache().keep(data_, rounded, memory_stats(device_).total.peak)) std::free(data_);
    } else {
#ifdef SG_CUDA
      cuda::device_free(data_, device_.index);
#endif
    }
  }
  tracker().add(device_, category_, -bytes_);
}

}  // namespace sg
