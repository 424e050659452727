// Storage allocation and the per-device, per-category byte counters.
// CPU memory is 64-byte aligned (one cache line; what AVX-512 loads want).
// CUDA memory comes from cudaMalloc through kernels/cuda/runtime.h.
#include "tensor/allocator.h"

#include <cstdlib>
#include <mutex>

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
      data = std::aligned_alloc(64, rounded);
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
      std::free(data_);
    } else {
#ifdef SG_CUDA
      cuda::device_free(data_, device_.index);
#endif
    }
  }
  tracker().add(device_, category_, -bytes_);
}

}  // namespace sg
