#include "tensor/block_cache.h"

#include <bit>

namespace sg {

size_t cuda_size_class(size_t bytes) {
  constexpr size_t kSmallStep = 512, kSmallLimit = size_t(1) << 20;
  if (bytes <= kSmallLimit) return (bytes + kSmallStep - 1) / kSmallStep * kSmallStep;
  // Above 1 MiB: bytes lies in (2^k, 2^(k+1)]; the classes step by 2^(k-3).
  const size_t power = std::bit_floor(bytes - 1);
  const size_t step = power / 8;
  return (bytes + step - 1) / step * step;
}

void* BlockCache::take(size_t rounded) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = free_.find(rounded);
  if (it == free_.end() || it->second.empty()) return nullptr;
  void* data = it->second.back();
  it->second.pop_back();
  cached_ -= rounded;
  return data;
}

void* BlockCache::allocate(size_t bytes) {
  const size_t rounded = backend_.rounding(bytes);
  if (enabled_) {
    if (void* data = take(rounded)) return data;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++backend_allocations_;
  }
  if (void* data = backend_.allocate(rounded)) return data;
  empty();  // out of memory: what the cache holds goes back, then once more
  return backend_.allocate(rounded);
}

void BlockCache::release(void* data, size_t bytes) {
  const size_t rounded = backend_.rounding(bytes);
  if (enabled_) {
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t limit = backend_.limit ? backend_.limit() : 0;
    if (limit == 0 || cached_ + rounded <= limit) {
      free_[rounded].push_back(data);
      cached_ += rounded;
      return;
    }
  }
  backend_.release(data, rounded);
}

void BlockCache::empty() {
  std::unordered_map<size_t, std::vector<void*>> blocks;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    blocks.swap(free_);
    cached_ = 0;
  }
  for (auto& [rounded, list] : blocks) {
    for (void* data : list) backend_.release(data, rounded);
  }
}

size_t BlockCache::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return cached_;
}

int64_t BlockCache::backend_allocations() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return backend_allocations_;
}

}  // namespace sg
