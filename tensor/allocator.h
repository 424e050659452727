// Memory accounting: every tensor's bytes come from Storage::allocate, which
// counts live and peak bytes per device and per category.
//
// ZeRO's promises are statements about bytes ("stage 3 keeps 16 Psi / N of
// model state per rank"); tests check them against these counters rather than
// against estimates. The counts are the bytes asked for (not rounded up to the
// allocator's alignment), so they match the formulas exactly.
//
// Read next: tensor/layout.h.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string_view>

#include "tensor/device.h"

namespace sg {

enum class MemoryCategory : uint8_t {
  parameter,
  gradient,
  optimizer_state,
  activation,
  communication,  // gather buffers, reduce-scatter buckets, staging
  other,
};
constexpr int kMemoryCategoryCount = 6;

std::string_view category_name(MemoryCategory category);

struct ByteCounter {
  int64_t live = 0;  // bytes allocated now
  int64_t peak = 0;  // most bytes live at once since the last reset
};

struct MemoryStats {
  std::array<ByteCounter, kMemoryCategoryCount> categories{};
  ByteCounter total;  // peak of the sum, which is at most the sum of the peaks
  int64_t allocations = 0;  // calls since the last reset

  const ByteCounter& operator[](MemoryCategory category) const {
    return categories[static_cast<size_t>(category)];
  }
};

// A snapshot of the counters for one device.
MemoryStats memory_stats(Device device);

// Memory freed by tensors and kept for reuse (tensor/block_cache.h; not
// counted as live), and a way to give it back to the C library or the CUDA
// driver (SG_CPU_CACHE=0 / SG_CUDA_CACHE=0 keep nothing).
int64_t cached_bytes(Device device);
void empty_cache(Device device);

// Whether new allocations are filled with 0xff bytes (SG_POISON=1;
// see Storage::allocate), and a switch for tests.
bool poison_memory();
void set_poison_memory(bool on);

// Sets every peak to the current live bytes and zeroes the allocation count,
// so the next peak measures one phase (a training step, say).
void reset_peak_memory(Device device);

// A block of memory on one device, freed (and uncounted) when the last tensor
// viewing it goes away. Tensors share a Storage through std::shared_ptr.
class Storage {
 public:
  // pinned: page-locked host memory (device must be the CPU); it is plain
  // host memory where no GPU is visible, and is_pinned() says which it got.
  // With SG_POISON=1 (scripts/test.sh sets it) memory, host (pinned or not)
  // or device, comes filled with 0xff bytes, NaN in every floating dtype,
  // whether it is new or reused from a cache: code that reads what it never
  // wrote (an empty tensor only partly filled) shows it, instead of reading
  // the zeros of a fresh page or what a freed tensor left.
  static std::shared_ptr<Storage> allocate(int64_t bytes, Device device, MemoryCategory category,
                                           bool pinned = false);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  int64_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  MemoryCategory category() const { return category_; }
  bool pinned() const { return pinned_; }

 private:
  Storage(void* data, int64_t bytes, Device device, MemoryCategory category, bool pinned)
      : data_(data), bytes_(bytes), device_(device), category_(category), pinned_(pinned) {}
  void* data_;
  int64_t bytes_;
  Device device_;
  MemoryCategory category_;
  bool pinned_;
};

}  // namespace sg
