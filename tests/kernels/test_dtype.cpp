// The bf16 and f16 conversions: exhaustive round trips and round-to-nearest-even
// checked against a brute-force nearest-value search.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/dtype.h"
#include "tests/test_util.h"

namespace sg {
namespace {

TEST(DType, SizesAndNames) {
  EXPECT_EQ(dtype_size(DType::f32), 4);
  EXPECT_EQ(dtype_size(DType::bf16), 2);
  EXPECT_EQ(dtype_size(DType::i64), 8);
  EXPECT_EQ(dtype_name(DType::f16), "f16");
  EXPECT_TRUE(is_floating(DType::bf16));
  EXPECT_FALSE(is_floating(DType::i32));
}

TEST(DType, EveryHalfRoundTripsThroughFloat) {
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    f16 h{uint16_t(bits)};
    float value = to_float(h);
    if (std::isnan(value)) {
      EXPECT_TRUE(std::isnan(to_float(to_f16(value))));
      continue;
    }
    ASSERT_EQ(to_f16(value).bits, h.bits) << "half bits " << bits << " value " << value;
  }
}

TEST(DType, EveryBfloatRoundTripsThroughFloat) {
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    bf16 b{uint16_t(bits)};
    float value = to_float(b);
    if (std::isnan(value)) continue;
    ASSERT_EQ(to_bf16(value).bits, b.bits) << "bf16 bits " << bits;
  }
}

TEST(DType, KnownHalfValues) {
  EXPECT_EQ(to_f16(1.0f).bits, 0x3c00);
  EXPECT_EQ(to_f16(-2.0f).bits, 0xc000);
  EXPECT_EQ(to_f16(65504.0f).bits, 0x7bff);
  EXPECT_EQ(to_f16(65519.0f).bits, 0x7bff);  // below the halfway point to 65536
  EXPECT_EQ(to_f16(65520.0f).bits, 0x7c00);  // halfway, ties to even: infinity
  EXPECT_EQ(to_f16(std::ldexp(1.0f, -24)).bits, 0x0001);  // smallest subnormal
  EXPECT_EQ(to_f16(std::ldexp(1.0f, -25)).bits, 0x0000);  // half of it ties to even zero
  EXPECT_EQ(to_f16(std::ldexp(3.0f, -25)).bits, 0x0002);  // 1.5 ulp ties up to even 2
  EXPECT_EQ(to_f16(0.1f).bits, 0x2e66);
  EXPECT_EQ(to_f16(std::numeric_limits<float>::infinity()).bits, 0x7c00);
}

TEST(DType, KnownBfloatValues) {
  EXPECT_EQ(to_bf16(1.0f).bits, 0x3f80);
  EXPECT_EQ(to_bf16(bits_to_float(0x3f808000u)).bits, 0x3f80);  // tie: stays even
  EXPECT_EQ(to_bf16(bits_to_float(0x3f818000u)).bits, 0x3f82);  // tie: rounds up to even
  EXPECT_EQ(to_bf16(bits_to_float(0x3f808001u)).bits, 0x3f81);  // above the tie
  EXPECT_TRUE(std::isnan(to_float(to_bf16(std::nanf("")))));
  EXPECT_TRUE(std::isfinite(to_float(to_bf16(3e38f))));  // large finite values stay finite
  EXPECT_TRUE(std::isinf(to_float(to_bf16(std::numeric_limits<float>::max()))));  // as PyTorch rounds it
}

// For random floats in half's range, to_f16 must pick the nearest half (ties to
// even), found here by binary search over every finite half value.
TEST(DType, HalfRoundingPicksTheNearestValue) {
  std::vector<std::pair<float, uint16_t>> halves;
  for (uint32_t bits = 0; bits < 0x7c00; ++bits) halves.push_back({to_float(f16{uint16_t(bits)}), uint16_t(bits)});
  auto values = test::random_floats(20000, 31, 0.0f, 1.0f);
  for (size_t i = 0; i < values.size(); ++i) {
    // Spread over many binades, subnormals included.
    float x = values[i] * std::ldexp(1.0f, int(i % 40) - 26);
    auto upper = std::lower_bound(halves.begin(), halves.end(), std::make_pair(x, uint16_t(0)));
    ASSERT_NE(upper, halves.end());
    auto lower = upper == halves.begin() ? upper : upper - 1;
    double below = double(x) - lower->first, above = double(upper->first) - x;
    uint16_t expected = below < above ? lower->second
                        : above < below ? upper->second
                        : (lower->second % 2 == 0 ? lower->second : upper->second);
    ASSERT_EQ(to_f16(x).bits, expected) << "x = " << x;
    ASSERT_EQ(to_f16(-x).bits, uint16_t(expected | 0x8000)) << "x = " << -x;
  }
}

}  // namespace
}  // namespace sg
