// The allocator counts exactly the bytes asked for, per device and category,
// and keeps peaks until reset.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include "tensor/tensor.h"

namespace sg {
namespace {

TEST(Allocator, CountsLiveAndPeakBytesPerCategory) {
  reset_peak_memory(Device::cpu());
  MemoryStats before = memory_stats(Device::cpu());
  {
    Tensor p = Tensor::empty({10, 3}, TensorOptions().category(MemoryCategory::parameter));
    Tensor g = Tensor::empty({7}, TensorOptions().dtype(DType::bf16).category(MemoryCategory::gradient));
    MemoryStats during = memory_stats(Device::cpu());
    EXPECT_EQ(during[MemoryCategory::parameter].live - before[MemoryCategory::parameter].live, 120);
    EXPECT_EQ(during[MemoryCategory::gradient].live - before[MemoryCategory::gradient].live, 14);
    EXPECT_EQ(during.total.live - before.total.live, 134);
    EXPECT_EQ(during.allocations - before.allocations, 2);
  }
  MemoryStats after = memory_stats(Device::cpu());
  EXPECT_EQ(after[MemoryCategory::parameter].live, before[MemoryCategory::parameter].live);
  EXPECT_EQ(after.total.live, before.total.live);
  // The peaks remember the moment both were alive.
  EXPECT_GE(after[MemoryCategory::parameter].peak, before[MemoryCategory::parameter].live + 120);
  EXPECT_GE(after.total.peak, before.total.live + 134);
}

TEST(Allocator, ViewsShareStorageAndAreNotCountedTwice) {
  MemoryStats before = memory_stats(Device::cpu());
  Tensor t = Tensor::empty({4, 4}, TensorOptions().category(MemoryCategory::optimizer_state));
  Tensor view = t.transpose(0, 1).slice(0, 1, 3);
  MemoryStats during = memory_stats(Device::cpu());
  EXPECT_EQ(during[MemoryCategory::optimizer_state].live - before[MemoryCategory::optimizer_state].live, 64);
  t = Tensor();  // the view keeps the storage alive
  EXPECT_EQ(memory_stats(Device::cpu())[MemoryCategory::optimizer_state].live,
            during[MemoryCategory::optimizer_state].live);
  view = Tensor();
  EXPECT_EQ(memory_stats(Device::cpu())[MemoryCategory::optimizer_state].live,
            before[MemoryCategory::optimizer_state].live);
}

TEST(Allocator, ResetMovesPeaksDownToLive) {
  { Tensor big = Tensor::empty({1000}, TensorOptions().category(MemoryCategory::communication)); }
  reset_peak_memory(Device::cpu());
  MemoryStats stats = memory_stats(Device::cpu());
  EXPECT_EQ(stats[MemoryCategory::communication].peak, stats[MemoryCategory::communication].live);
  EXPECT_EQ(stats.total.peak, stats.total.live);
  EXPECT_EQ(stats.allocations, 0);
}

TEST(Allocator, ShardsCountOnlyTheirLocalBytes) {
  MemoryStats before = memory_stats(Device::cpu());
  Tensor shard = Tensor::empty_sharded({10, 10}, 1, 4, TensorOptions().category(MemoryCategory::parameter));
  MemoryStats during = memory_stats(Device::cpu());
  EXPECT_EQ(during[MemoryCategory::parameter].live - before[MemoryCategory::parameter].live, 25 * 4);
}

TEST(Allocator, CategoryNamesAreReadable) {
  EXPECT_EQ(category_name(MemoryCategory::optimizer_state), "optimizer_state");
  EXPECT_EQ(category_name(MemoryCategory::communication), "communication");
}

}  // namespace
}  // namespace sg

namespace sg {
namespace {

// Freed host blocks are kept and handed out again for the same size (no
// fresh pages for the kernel to zero), and never counted as live.
TEST(HostCache, ReusesFreedBlocksWithoutCountingThemLive) {
  empty_cache(Device::cpu());
  const int64_t live = memory_stats(Device::cpu()).total.live;
  void* first = nullptr;
  {
    Tensor a = Tensor::empty({1000, 100});
    first = a.data_ptr();
  }
  EXPECT_EQ(memory_stats(Device::cpu()).total.live, live);
  EXPECT_EQ(cached_bytes(Device::cpu()), 400000);
  Tensor b = Tensor::empty({100, 1000});  // the same bytes
  EXPECT_EQ(b.data_ptr(), first);
  EXPECT_EQ(cached_bytes(Device::cpu()), 0);
  { Tensor c = Tensor::empty({7}); }
  EXPECT_EQ(cached_bytes(Device::cpu()), 64);  // rounded to the 64-byte alignment
  empty_cache(Device::cpu());
  EXPECT_EQ(cached_bytes(Device::cpu()), 0);
}

// SG_POISON=1: host memory comes as NaN, new or reused, so a read of what
// was never written shows; off, nothing is written.
TEST(HostPoison, NewAndReusedHostMemoryIsNaN) {
  const bool was = poison_memory();
  set_poison_memory(true);
  void* first = nullptr;
  {
    Tensor a = Tensor::empty({3000});
    first = a.data_ptr();
    for (float v : a.to_vector<float>()) ASSERT_TRUE(std::isnan(v));
    a.fill_(1.0);
  }
  const char* cache_setting = std::getenv("SG_CPU_CACHE");
  const bool cached = cache_setting == nullptr || std::string(cache_setting) != "0";
  Tensor b = Tensor::empty({3000});  // the cached block again
  if (cached) {
    EXPECT_EQ(b.data_ptr(), first) << "the test needs the block to be reused";
  }
  for (float v : b.to_vector<float>()) ASSERT_TRUE(std::isnan(v)) << "a reused block keeps its old values";
  for (float v : Tensor::empty({5}, TensorOptions().dtype(DType::bf16)).to(DType::f32).to_vector<float>()) {
    EXPECT_TRUE(std::isnan(v));
  }
  set_poison_memory(false);
  Tensor c = Tensor::empty({3000});
  void* block = c.data_ptr();
  c.fill_(2.0);
  c = Tensor();
  Tensor d = Tensor::empty({3000});
  if (cached) {
    EXPECT_EQ(d.data_ptr(), block);
    EXPECT_EQ(d.to_vector<float>()[0], 2.0f) << "without poison a block comes as it was left";
  }
  set_poison_memory(was);
}

}  // namespace
}  // namespace sg
