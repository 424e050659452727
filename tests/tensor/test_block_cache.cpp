// The caching allocator's rules, on a fake backend with a fixed budget: the
// same logic serves the host and every GPU (tensor/block_cache.h).
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>

#include "tensor/block_cache.h"

namespace sg {
namespace {

// Hands out fake addresses until `budget` bytes are out, and checks that
// every release matches an allocation of the same size.
struct FakeDevice {
  explicit FakeDevice(size_t budget_bytes) : budget(budget_bytes) {}
  size_t budget, used = 0;
  uintptr_t next = 0x1000;
  std::map<void*, size_t> live;
  int releases = 0;

  BlockCache::Backend backend(std::function<size_t()> limit = {}) {
    return BlockCache::Backend{
        .allocate = [this](size_t bytes) -> void* {
          if (used + bytes > budget) return nullptr;
          used += bytes;
          void* data = reinterpret_cast<void*>(next);
          next += bytes;
          live[data] = bytes;
          return data;
        },
        .release =
            [this](void* data, size_t bytes) {
              ASSERT_EQ(live.at(data), bytes);
              live.erase(data);
              used -= bytes;
              ++releases;
            },
        .rounding = cuda_size_class,
        .limit = std::move(limit),
    };
  }
};

TEST(CudaSizeClass, SmallRequestsRoundTo512BytesLargeOnesToAnEighthOfTheirPowerOfTwo) {
  EXPECT_EQ(cuda_size_class(0), 0u);
  EXPECT_EQ(cuda_size_class(1), 512u);
  EXPECT_EQ(cuda_size_class(512), 512u);
  EXPECT_EQ(cuda_size_class(513), 1024u);
  EXPECT_EQ(cuda_size_class(size_t(1) << 20), size_t(1) << 20);
  // (1 MiB, 2 MiB] steps by 128 KiB.
  EXPECT_EQ(cuda_size_class((size_t(1) << 20) + 1), (size_t(1) << 20) + (size_t(128) << 10));
  EXPECT_EQ(cuda_size_class(size_t(2) << 20), size_t(2) << 20);
  // (2 MiB, 4 MiB] steps by 256 KiB.
  EXPECT_EQ(cuda_size_class((size_t(2) << 20) + 1), (size_t(2) << 20) + (size_t(256) << 10));
  for (size_t bytes = 1; bytes < (size_t(1) << 34); bytes = bytes * 3 + 7) {
    const size_t rounded = cuda_size_class(bytes);
    EXPECT_GE(rounded, bytes);
    EXPECT_LE(double(rounded), double(bytes) * 1.125 + 512) << bytes;
    EXPECT_EQ(cuda_size_class(rounded), rounded) << "a class is its own class";
  }
}

TEST(BlockCache, FreedBlocksServeTheNextRequestOfTheirClass) {
  FakeDevice device(size_t(1) << 30);
  BlockCache cache(device.backend(), true);
  void* a = cache.allocate(3000);  // class 3072
  cache.release(a, 3000);
  EXPECT_EQ(cache.cached_bytes(), 3072u);
  EXPECT_EQ(cache.allocate(2600), a) << "2600 bytes is in the same class";
  EXPECT_EQ(cache.cached_bytes(), 0u);
  void* b = cache.allocate(4000);
  EXPECT_NE(b, a);
  EXPECT_EQ(cache.backend_allocations(), 2);
  cache.release(a, 2600);
  cache.release(b, 4000);
  EXPECT_EQ(device.releases, 0) << "nothing went back to the device";
  cache.empty();
  EXPECT_EQ(device.releases, 2);
  EXPECT_TRUE(device.live.empty());
  EXPECT_EQ(cache.cached_bytes(), 0u);
}

TEST(BlockCache, OutOfMemoryGivesTheCacheBackAndTriesAgain) {
  FakeDevice device(10 * 1024);
  BlockCache cache(device.backend(), true);
  void* a = cache.allocate(4096);
  void* b = cache.allocate(4096);
  cache.release(a, 4096);
  cache.release(b, 4096);
  // 6 KiB does not fit beside the two cached 4 KiB blocks; it does once they go.
  void* c = cache.allocate(6 * 1024);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(cache.cached_bytes(), 0u);
  EXPECT_EQ(device.releases, 2);
  // More than the device has: nullptr, for the caller's error message.
  EXPECT_EQ(cache.allocate(8 * 1024), nullptr);
  cache.release(c, 6 * 1024);
  cache.empty();
  EXPECT_TRUE(device.live.empty());
}

TEST(BlockCache, ALimitSendsTheOverflowBackAtOnce) {
  FakeDevice device(size_t(1) << 30);
  BlockCache cache(device.backend([] { return size_t(5000); }), true);
  void* a = cache.allocate(4096);
  void* b = cache.allocate(4096);
  cache.release(a, 4096);
  cache.release(b, 4096);
  EXPECT_EQ(cache.cached_bytes(), 4096u);
  EXPECT_EQ(device.releases, 1);
  cache.empty();
  EXPECT_TRUE(device.live.empty());
}

TEST(BlockCache, DisabledItKeepsNothing) {
  FakeDevice device(size_t(1) << 30);
  BlockCache cache(device.backend(), false);
  void* a = cache.allocate(100);
  cache.release(a, 100);
  EXPECT_EQ(cache.cached_bytes(), 0u);
  EXPECT_EQ(device.releases, 1);
  EXPECT_TRUE(device.live.empty());
}

}  // namespace
}  // namespace sg
