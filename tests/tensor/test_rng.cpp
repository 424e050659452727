// Counter-based fills: a shard filled alone equals the same slice of the whole
// tensor filled at once, for every rank of uneven world sizes.
#include <gtest/gtest.h>

#include "tensor/rng.h"
#include "tensor/tensor.h"

namespace sg {
namespace {

TEST(Rng, ShardFilledAloneEqualsTheSliceOfTheWholeTensor) {
  const Shape shape{37, 11};  // 407 elements: uneven over 2, 3 and 4 ranks
  Tensor whole = Tensor::empty(shape);
  fill_normal_(whole, 2024, "h.0.attn.c_attn.weight", 0.0, 0.02);
  std::vector<float> all = whole.to_vector<float>();
  for (int world : {1, 2, 3, 4}) {
    for (int rank = 0; rank < world; ++rank) {
      Tensor shard = Tensor::empty_sharded(shape, rank, world, {}, /*align=*/4);
      fill_normal_(shard, 2024, "h.0.attn.c_attn.weight", 0.0, 0.02);
      std::vector<float> local = shard.local().to_vector<float>();
      const Sharded& s = shard.layout().shard();
      for (int64_t i = s.begin; i < s.end; ++i) {
        ASSERT_EQ(local[size_t(i - s.begin)], all[size_t(i)]) << "world " << world << " rank " << rank << " i " << i;
      }
      for (int64_t i = s.end - s.begin; i < s.shard_size(); ++i) ASSERT_EQ(local[size_t(i)], 0.0f);
    }
  }
}

TEST(Rng, SameSeedAndNameGiveTheSameValues) {
  Tensor a = Tensor::empty({100}), b = Tensor::empty({100}), c = Tensor::empty({100}), d = Tensor::empty({100});
  fill_uniform_(a, 1, "wte.weight", -1.0, 1.0);
  fill_uniform_(b, 1, "wte.weight", -1.0, 1.0);
  fill_uniform_(c, 2, "wte.weight", -1.0, 1.0);
  fill_uniform_(d, 1, "wpe.weight", -1.0, 1.0);
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
  EXPECT_NE(a.to_vector<float>(), c.to_vector<float>());  // another seed
  EXPECT_NE(a.to_vector<float>(), d.to_vector<float>());  // another name
  for (float v : a.to_vector<float>()) {
    EXPECT_GE(v, -1.0f);
    EXPECT_LT(v, 1.0f);
  }
}

TEST(Rng, SixteenBitFillsAreTheRoundedF32Fill) {
  Tensor full = Tensor::empty({64}), half = Tensor::empty({64}, TensorOptions().dtype(DType::bf16));
  fill_normal_(full, 5, "w");
  fill_normal_(half, 5, "w");
  std::vector<float> expected = full.to_vector<float>();
  std::vector<bf16> got = half.to_vector<bf16>();
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].bits, to_bf16(expected[i]).bits);
}

TEST(Rng, RefusesIntegerAndStridedTargets) {
  Tensor ids = Tensor::empty({4}, TensorOptions().dtype(DType::i32));
  EXPECT_THROW(fill_normal_(ids, 1, "ids"), Error);
  Tensor view = Tensor::empty({4, 4}).transpose(0, 1);
  EXPECT_THROW(fill_normal_(view, 1, "v"), Error);
}

TEST(Rng, StreamIsTheFnv1aHashOfTheName) {
  EXPECT_EQ(rng_stream(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(rng_stream("a"), 0xaf63dc4c8601ec8cull);  // the published FNV-1a test vector
}

}  // namespace
}  // namespace sg
