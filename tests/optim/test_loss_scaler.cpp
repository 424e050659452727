// The fp16 loss scaler against DeepSpeed's rules, step by step, on scripted
// overflow patterns (no GPU needed: the scaler is bookkeeping).
#include <gtest/gtest.h>

#include <vector>

#include "kernels/error.h"
#include "optim/loss_scaler.h"

namespace sg {
namespace {

// The scale after each update of `overflows` (1: inf/NaN gradients).
std::vector<double> scales(LossScaler& scaler, const std::vector<int>& overflows) {
  std::vector<double> out;
  for (int overflow : overflows) {
    EXPECT_EQ(scaler.update(overflow != 0), overflow == 0) << "a step is applied exactly when nothing overflowed";
    out.push_back(scaler.scale());
  }
  return out;
}

TEST(LossScaler, DoublesAfterEachWindowOfGoodSteps) {
  LossScaler scaler({.initial_scale_power = 4, .loss_scale_window = 3});
  EXPECT_EQ(scaler.scale(), 16);
  EXPECT_EQ(scales(scaler, {0, 0, 0, 0, 0, 0}), (std::vector<double>{16, 16, 32, 32, 32, 64}));
}

TEST(LossScaler, HysteresisAbsorbsOverflowsUntilAWindowRestoresIt) {
  LossScaler scaler({.initial_scale_power = 4, .loss_scale_window = 3, .hysteresis = 2});
  // The first overflow is absorbed, the next ones halve; good steps do not
  // restore the tolerance until a whole window has passed.
  EXPECT_EQ(scales(scaler, {1, 1, 1, 0, 1}), (std::vector<double>{16, 8, 4, 4, 2}));
  // A window after the last overflow (iterations 5, 6, 7): doubled, tolerance back.
  EXPECT_EQ(scales(scaler, {0, 0, 0, 1, 1}), (std::vector<double>{2, 2, 4, 4, 2}));
}

TEST(LossScaler, ConsecutiveHysteresisRestoresAfterEveryGoodStep) {
  LossScaler scaler({.initial_scale_power = 4, .loss_scale_window = 1000, .hysteresis = 2,
                     .consecutive_hysteresis = true});
  EXPECT_EQ(scales(scaler, {1, 0, 1, 0, 1, 1}), (std::vector<double>{16, 16, 16, 16, 16, 8}));
}

TEST(LossScaler, TheWindowCountsFromTheLastOverflow) {
  LossScaler scaler({.initial_scale_power = 4, .loss_scale_window = 2, .hysteresis = 1});
  EXPECT_EQ(scales(scaler, {1, 0, 0, 0, 0}), (std::vector<double>{8, 8, 16, 16, 32}));
}

TEST(LossScaler, AnOverflowAtTheMinimumScaleIsAnError) {
  LossScaler scaler({.initial_scale_power = 1, .hysteresis = 1, .min_loss_scale = 1});
  EXPECT_EQ(scales(scaler, {1}), (std::vector<double>{1}));
  try {
    scaler.update(true);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the run has diverged"), std::string::npos) << e.what();
  }
}

TEST(LossScaler, AStaticScaleNeverMovesButStillSkipsOverflows) {
  LossScaler scaler({.static_scale = 128});
  EXPECT_FALSE(scaler.dynamic());
  EXPECT_EQ(scales(scaler, {1, 0, 1, 0}), (std::vector<double>{128, 128, 128, 128}));
}

TEST(LossScaler, StateRoundTripContinuesExactly) {
  const LossScalerOptions options{.initial_scale_power = 5, .loss_scale_window = 2, .hysteresis = 2};
  const std::vector<int> pattern = {1, 0, 1, 1, 0, 0, 0, 1, 0, 0};
  LossScaler whole(options), first(options), second(options);
  std::vector<double> expected = scales(whole, pattern);
  std::vector<double> got = scales(first, std::vector<int>(pattern.begin(), pattern.begin() + 4));
  second.restore(first.state());
  std::vector<double> rest = scales(second, std::vector<int>(pattern.begin() + 4, pattern.end()));
  got.insert(got.end(), rest.begin(), rest.end());
  EXPECT_EQ(got, expected);
}

TEST(LossScaler, BadOptionsNameTheKey) {
  EXPECT_THROW(LossScaler({.loss_scale_window = 0}), Error);
  EXPECT_THROW(LossScaler({.hysteresis = 0}), Error);
  EXPECT_THROW(LossScaler({.min_loss_scale = 0}), Error);
}

}  // namespace
}  // namespace sg
