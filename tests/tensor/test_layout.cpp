// Sharded layouts: ranges, padding, printing, and the errors a sharded tensor
// gives when touched outside its shard.
#include <gtest/gtest.h>

#include "tensor/rng.h"
#include "tensor/tensor.h"

namespace sg {
namespace {

TEST(Layout, UnevenShardsArePaddedAtTheTail) {
  // 10 elements over 3 ranks: padded to 12, shards of 4: [0,4) [4,8) [8,10)+2 pad.
  std::vector<std::pair<int64_t, int64_t>> ranges = {{0, 4}, {4, 8}, {8, 10}};
  for (int rank = 0; rank < 3; ++rank) {
    Layout layout = Layout::sharded({2, 5}, rank, 3);
    const Sharded& s = layout.shard();
    EXPECT_EQ(s.padded, 12);
    EXPECT_EQ(s.shard_size(), 4);
    EXPECT_EQ(s.begin, ranges[size_t(rank)].first);
    EXPECT_EQ(s.end, ranges[size_t(rank)].second);
    EXPECT_EQ(layout.local_numel(), 4);
  }
}

TEST(Layout, MoreRanksThanElementsLeavesEmptyShards) {
  Layout last = Layout::sharded({3}, 4, 5);
  EXPECT_EQ(last.shard().padded, 5);
  EXPECT_EQ(last.shard().begin, 3);
  EXPECT_EQ(last.shard().end, 3);  // holds only padding
  EXPECT_FALSE(last.holds(2));
}

TEST(Layout, AlignmentRoundsEveryShard) {
  Layout layout = Layout::sharded({100}, 0, 4, /*align=*/8);
  EXPECT_EQ(layout.shard().padded, 128);
  EXPECT_EQ(layout.shard().shard_size(), 32);
}

TEST(Layout, BadArgumentsAreClearErrors) {
  EXPECT_THROW(Layout::sharded({4}, 4, 4), Error);
  EXPECT_THROW(Layout::sharded({4}, 0, 0), Error);
  EXPECT_THROW(Layout::replicated({2, -1}), Error);
  EXPECT_THROW(Layout::replicated({3}).shard(), Error);
}

TEST(Layout, PrintingShowsThePlacement) {
  EXPECT_EQ(Layout::sharded({2304, 768}, 0, 4).str(DType::f32), "f32[2304@dp/4, 768]");
  EXPECT_EQ(Layout::replicated({2, 3}).str(DType::bf16), "bf16[2, 3]");
  EXPECT_EQ(Layout::replicated({}).str(DType::f32), "f32[]");
  Tensor t = Tensor::empty_sharded({2304, 768}, 2, 4);
  EXPECT_EQ(t.str(), "f32[2304@dp/4, 768]");
}

TEST(ShardedTensor, ReportsTheGlobalShapeAndHoldsOnlyItsShard) {
  Tensor t = Tensor::empty_sharded({6, 5}, 1, 4);  // 30 elements, padded 32, shards of 8
  EXPECT_EQ(t.shape(), (Shape{6, 5}));
  EXPECT_EQ(t.numel(), 30);
  EXPECT_TRUE(t.is_sharded());
  EXPECT_EQ(t.local().shape(), (Shape{8}));
  EXPECT_EQ(t.nbytes(), 32);
}

TEST(ShardedTensor, ElementAccessInsideTheShardReadsTheRightValue) {
  Tensor t = Tensor::empty_sharded({6, 5}, 1, 4);  // rank 1 holds flat [8, 16)
  Tensor local = t.local();
  local.copy_(Tensor::arange(8).to(DType::f32));
  EXPECT_EQ(t.at({1, 3}), 0.0);  // flat 8 is local element 0
  EXPECT_EQ(t.at({3, 0}), 7.0);  // flat 15 is local element 7
}

TEST(ShardedTensor, AccessOutsideTheShardNamesTheOwner) {
  Tensor t = Tensor::empty_sharded({6, 5}, 1, 4);
  try {
    t.at({5, 4});  // flat 29: rank 3's
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string message = e.what();
    EXPECT_NE(message.find("lives on rank 3"), std::string::npos) << message;
    EXPECT_NE(message.find("this is rank 1"), std::string::npos) << message;
  }
}

TEST(ShardedTensor, RefusesWholeTensorOperations) {
  Tensor t = Tensor::empty_sharded({6, 5}, 0, 2);
  EXPECT_THROW(t.transpose(0, 1), Error);
  EXPECT_THROW(t.view({30}), Error);
  EXPECT_THROW(t.slice(0, 0, 2), Error);
  EXPECT_THROW(t.to_vector<float>(), Error);
  EXPECT_THROW(t.copy_(Tensor::zeros({6, 5})), Error);  // placements differ
}

TEST(ShardedTensor, PaddingIsZeroAfterARandomFill) {
  Tensor t = Tensor::empty_sharded({10}, 2, 3);  // holds [8, 10) plus 2 padding
  fill_normal_(t, 7, "w");
  std::vector<float> local = t.local().to_vector<float>();
  EXPECT_NE(local[0], 0.0f);
  EXPECT_EQ(local[2], 0.0f);
  EXPECT_EQ(local[3], 0.0f);
}

TEST(ShardedTensor, ConvertsAndClonesShardWise) {
  Tensor t = Tensor::empty_sharded({9}, 0, 2);
  fill_uniform_(t, 3, "x");
  Tensor half = t.to(DType::bf16);
  EXPECT_TRUE(half.is_sharded());
  EXPECT_EQ(half.layout(), t.layout());
  Tensor copy = t.clone();
  EXPECT_EQ(copy.local().to_vector<float>(), t.local().to_vector<float>());
  EXPECT_NE(copy.data_ptr(), t.data_ptr());
}


TEST(ReleasedTensor, HoldsNothingAndSaysWhereItsValuesAre) {
  Tensor t = Tensor::empty_with(Layout::released({6, 5}, 1, 4));
  EXPECT_TRUE(t.layout().is_released());
  EXPECT_EQ(t.shape(), (Shape{6, 5}));
  EXPECT_EQ(t.nbytes(), 0);
  EXPECT_EQ(t.str(), "f32[6@dp/4, 5]");
  try {
    t.at({0, 0});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("released ZeRO-3 parameter"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(Layout::sharded({6, 5}, 1, 4).is_released());
}

}  // namespace
}  // namespace sg
