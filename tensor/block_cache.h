// A caching allocator: freed blocks are kept by size and handed out again
// instead of going back to the system.
//
// Why: a training step allocates the same sizes every step. On the CPU,
// glibc serves large blocks with fresh mmap pages that the kernel zeroes on
// first touch; on a GPU, cudaMalloc costs tens of microseconds and cudaFree
// synchronizes the whole device, which would serialize the host with every
// kernel. Keeping the blocks makes both free.
//
// How: a request is rounded to its size class (rounding()), served from the
// free list of that class when one is there, else from the backend. When the
// backend is out of memory, every cached block is given back and the request
// tried once more (PyTorch's rule), so caching never causes an out-of-memory
// that the uncached allocator would not have hit. keep() may refuse a block
// (the owner frees it then) when the cache would exceed its limit.
//
// Streams: a CUDA block freed by the host may still be read by kernels queued
// on the device's compute stream. Reusing it is safe because every kernel
// shardgrad issues runs on that one stream, in issue order: the next user of
// the block is queued behind the last. Work on another stream (NCCL's) holds
// its tensors alive until an event says that stream is done with them.
//
// Read next: tensor/allocator.cpp (the host and CUDA caches it builds).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace sg {

// The size a CUDA request is served with: multiples of 512 bytes up to
// 1 MiB, then eight classes per power of two (at most 12.5% unused), so a
// step whose shapes move a little still finds its blocks.
size_t cuda_size_class(size_t bytes);

class BlockCache {
 public:
  struct Backend {
    std::function<void*(size_t)> allocate;  // nullptr when out of memory
    std::function<void(void*, size_t)> release;
    std::function<size_t(size_t)> rounding;
    // Most bytes the cache may hold (checked on keep); 0: no limit.
    std::function<size_t()> limit = {};
  };

  BlockCache(Backend backend, bool enabled) : backend_(std::move(backend)), enabled_(enabled) {}
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  // A block of at least `bytes` (rounding(bytes) exactly), or nullptr when
  // the backend has no memory even after the cache gave all of its back.
  void* allocate(size_t bytes);
  // Takes back a block allocate() returned for `bytes`.
  void release(void* data, size_t bytes);
  // Gives every cached block back to the backend.
  void empty();

  size_t cached_bytes() const;
  int64_t backend_allocations() const;  // calls that reached the backend

 private:
  void* take(size_t rounded);

  Backend backend_;
  bool enabled_;
  mutable std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0;
  int64_t backend_allocations_ = 0;
};

}  // namespace sg
