// Storage allocation and the per-device, per-category byte counters.
// CPU memory is 64-byte aligned (one cache line; what AVX-512 loads want).
// CUDA memory comes from cudaMalloc through kernels/cuda/runtime.h.
//
// Freed blocks are kept for reuse on both (tensor/block_cache.h says why; on
// the CPU a sixth of a GPT-2 124M step was the kernel's clear_page before).
// The counters count live tensors only; the caches' bytes are reported apart
// (cached_bytes()).
#include "tensor/allocator.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/env_switch.h"
#include "kernels/error.h"
#include "tensor/block_cache.h"
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
size_t host_rounding(size_t bytes) { return (bytes + 63) / 64 * 64; }

BlockCache& host_cache() {
  static BlockCache* instance = new BlockCache(  // never destroyed, like the tracker
      BlockCache::Backend{
          .allocate = [](size_t bytes) { return std::aligned_alloc(64, bytes); },
          .release = [](void* data, size_t) { std::free(data); },
          .rounding = host_rounding,
          .limit =
              [] {
                Tracker& t = tracker();  // the cache's lock is held; the tracker never takes it
                std::lock_guard<std::mutex> lock(t.mutex);
                return size_t(std::max<int64_t>(t.devices[0].total.peak, int64_t(256) << 20));
              },
      },
      env_switch_on("SG_CPU_CACHE"));
  return *instance;
}

#ifdef SG_CUDA
// One cache per GPU, without a limit: its blocks go back to the driver when
// cudaMalloc runs out (BlockCache::allocate) or on empty_cache().
// SG_CUDA_CACHE=0 turns it off (for compute-sanitizer runs, say).
BlockCache& cuda_cache(int device) {
  static std::array<BlockCache*, kMaxCudaDevices> caches{};
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  BlockCache*& cache = caches[size_t(device)];
  if (cache == nullptr) {
    cache = new BlockCache(
        BlockCache::Backend{
            .allocate = [device](size_t bytes) { return cuda::try_device_malloc(int64_t(bytes), device); },
            .release = [device](void* data, size_t) { cuda::device_free(data, device); },
            .rounding = cuda_size_class,
        },
        env_switch_on("SG_CUDA_CACHE"));
  }
  return *cache;
}

int visible_cuda_devices() {
  static const int count = cuda::device_count();
  return count;
}

// Pinned host blocks (cudaMallocHost) for staging; emptied with the host cache.
BlockCache& pinned_cache() {
  static BlockCache* instance = new BlockCache(
      BlockCache::Backend{
          .allocate = [](size_t bytes) { return cuda::pinned_malloc(int64_t(bytes)); },
          .release = [](void* data, size_t) { cuda::pinned_free(data); },
          .rounding = cuda_size_class,
      },
      env_switch_on("SG_CUDA_CACHE"));
  return *instance;
}
#else
int visible_cuda_devices() { return 0; }
#endif

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

int64_t cached_bytes(Device device) {
#ifdef SG_CUDA
  if (device.is_cpu() && visible_cuda_devices() > 0) {
    return int64_t(host_cache().cached_bytes() + pinned_cache().cached_bytes());
  }
#endif
  if (device.is_cpu()) return int64_t(host_cache().cached_bytes());
#ifdef SG_CUDA
  if (device.index >= 0 && device.index < visible_cuda_devices()) {
    return int64_t(cuda_cache(device.index).cached_bytes());
  }
#endif
  return 0;
}

void empty_cache(Device device) {
#ifdef SG_CUDA
  if (device.is_cpu() && visible_cuda_devices() > 0) pinned_cache().empty();
#endif
  if (device.is_cpu()) return host_cache().empty();
#ifdef SG_CUDA
  if (device.index >= 0 && device.index < visible_cuda_devices()) cuda_cache(device.index).empty();
#endif
}


void reset_peak_memory(Device device) {
  Tracker& t = tracker();
  std::lock_guard<std::mutex> lock(t.mutex);
  MemoryStats& stats = t.slot(device);
  for (ByteCounter& counter : stats.categories) counter.peak = counter.live;
  stats.total.peak = stats.total.live;
  stats.allocations = 0;
}

std::atomic<bool>& poison_setting() {
  static std::atomic<bool> poison = [] {
    const char* setting = std::getenv("SG_POISON");
    return setting != nullptr && std::string(setting) == "1";
  }();
  return poison;
}

bool poison_memory() { return poison_setting().load(std::memory_order_relaxed); }
void set_poison_memory(bool on) { poison_setting().store(on, std::memory_order_relaxed); }

std::shared_ptr<Storage> Storage::allocate(int64_t bytes, Device device, MemoryCategory category, bool pinned) {
  SG_CHECK(bytes >= 0, "cannot allocate a negative number of bytes (", bytes, ")");
  SG_CHECK(!pinned || device.is_cpu(), "pinned memory is host memory; ", device.str(), " tensors cannot be pinned");
  pinned = pinned && visible_cuda_devices() > 0;
  void* data = nullptr;
  if (bytes > 0) {
    if (pinned) {
#ifdef SG_CUDA
      data = pinned_cache().allocate(size_t(bytes));  // throws when the driver refuses
#endif
    } else if (device.is_cpu()) {
      data = host_cache().allocate(size_t(bytes));
      SG_CHECK(data != nullptr, "out of host memory allocating ", bytes, " bytes for ",
               category_name(category), "; live host bytes: ", memory_stats(device).total.live);
    } else {
#ifdef SG_CUDA
      const int visible = visible_cuda_devices();
      SG_CHECK(device.index < visible, "cannot allocate on ", device.str(), ": this machine has ", visible,
               " CUDA device(s) visible; keep tensors on Device::cpu() or check CUDA_VISIBLE_DEVICES");
      data = cuda_cache(device.index).allocate(size_t(bytes));
      if (data == nullptr) {
        const cuda::MemoryInfo info = cuda::memory_info(device.index);
        SG_FAIL("out of memory on ", device.str(), " allocating ", bytes, " bytes for ", category_name(category),
                ": shardgrad's tensors hold ", memory_stats(device).total.live, " bytes, the driver reports ",
                info.free_bytes, " of ", info.total_bytes,
                " bytes free; reduce the micro-batch size or use a higher ZeRO stage");
      }
#else
      SG_FAIL("this build of shardgrad has no CUDA support; reconfigure with -DSG_CUDA=ON on a machine "
              "with the CUDA toolkit to use ", device.str());
#endif
    }
  }
  if (data != nullptr && poison_memory()) {
    if (device.is_cpu()) {
      std::memset(data, 0xff, size_t(bytes));
    } else {
#ifdef SG_CUDA
      cuda::fill_bytes_async(data, 0xff, bytes, device.index);  // a reused block too, in stream order
#endif
    }
  }
  tracker().add(device, category, bytes);
  return std::shared_ptr<Storage>(new Storage(data, bytes, device, category, pinned));
}

Storage::~Storage() {
  if (data_ != nullptr) {
    if (pinned_) {
#ifdef SG_CUDA
      pinned_cache().release(data_, size_t(bytes_));
#endif
    } else if (device_.is_cpu()) {
      host_cache().release(data_, size_t(bytes_));
    } else {
#ifdef SG_CUDA
      cuda_cache(device_.index).release(data_, size_t(bytes_));
#endif
    }
  }
  tracker().add(device_, category_, -bytes_);
}

}  // namespace sg
