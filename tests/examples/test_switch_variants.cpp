// bench_gpt --variants' pieces (bench/switch_variants.h): the spec's syntax
// and its refusals, switches set and put back, and the gradient comparison
// that keeps a wrong kernel out of the timings.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include "bench/switch_variants.h"

namespace sg {
namespace {

std::string error_of(const std::string& spec) {
  try {
    parse_switch_variants(spec);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(SwitchVariants, ParsesNamesAndSettingsAfterTheDefaults) {
  const auto variants = parse_switch_variants(
      "  wgmma:SG_FLASH_WGMMA=1\n plain:SG_FLASH_WGMMA=1,SG_FLASH_WGMMA_OVERLAP=0 again: ");
  ASSERT_EQ(variants.size(), 4u);
  EXPECT_EQ(variants[0].name, "default");
  EXPECT_TRUE(variants[0].settings.empty());
  EXPECT_EQ(variants[1].name, "wgmma");
  EXPECT_EQ(variants[1].describe(), "SG_FLASH_WGMMA=1");
  EXPECT_EQ(variants[2].describe(), "SG_FLASH_WGMMA=1,SG_FLASH_WGMMA_OVERLAP=0");
  EXPECT_EQ(variants[3].name, "again");
  EXPECT_EQ(variants[3].describe(), "(the defaults)");
  EXPECT_EQ(parse_switch_variants("").size(), 1u);
}

TEST(SwitchVariants, RefusesWhatOneProcessCannotTime) {
  EXPECT_NE(error_of("x:SG_CUBLASLT=0").find("not a switch the kernels read at each call"), std::string::npos)
      << "read once a process: the second variant would silently run the first's kernels";
  EXPECT_NE(error_of("x:SG_FLASH_WGMMA").find("is not VAR=value"), std::string::npos);
  EXPECT_NE(error_of("SG_FLASH_WGMMA=1").find("is not name:VAR=value"), std::string::npos);
  EXPECT_NE(error_of(":SG_FLASH_WGMMA=1").find("is not name:VAR=value"), std::string::npos);
  EXPECT_NE(error_of("a:SG_FLASH_WGMMA=1 a:SG_FLASH_FUSED_DQ=1").find("used twice"), std::string::npos);
  EXPECT_NE(error_of("default:SG_FLASH_WGMMA=1").find("always the first"), std::string::npos);
  EXPECT_NE(error_of("x:SG_FLASH_WGMMA=1,SG_FLASH_WGMMA=0").find("sets SG_FLASH_WGMMA twice"), std::string::npos);
}

TEST(SwitchVariants, SwitchesArePutBackAsTheyWere) {
  setenv("SG_FLASH_FUSED_DQ", "0", 1);
  unsetenv("SG_FLASH_WGMMA");
  {
    ScopedSwitches on(parse_switch_variants("x:SG_FLASH_FUSED_DQ=1,SG_FLASH_WGMMA=1")[1]);
    EXPECT_STREQ(std::getenv("SG_FLASH_FUSED_DQ"), "1");
    EXPECT_STREQ(std::getenv("SG_FLASH_WGMMA"), "1");
  }
  EXPECT_STREQ(std::getenv("SG_FLASH_FUSED_DQ"), "0");
  EXPECT_EQ(std::getenv("SG_FLASH_WGMMA"), nullptr);
  unsetenv("SG_FLASH_FUSED_DQ");
}

GradientCheck check_of(double loss, std::vector<float> a, std::vector<float> b) {
  return {loss, {{"a", std::move(a)}, {"b", std::move(b)}}};
}

TEST(SwitchVariants, TheWorstParameterNamesTheDifference) {
  const GradientCheck reference = check_of(2.0, {3, 4}, {1, 0});
  const CheckDifference same = compare_checks(reference, reference);
  EXPECT_EQ(same.loss, 0.0);
  EXPECT_EQ(same.worst_gradient, 0.0);
  EXPECT_TRUE(same.within(0.0));

  // a is 1/5 off (|(0, 1)| / |(3, 4)|), b 1/2 off: b is the worst.
  const CheckDifference d = compare_checks(reference, check_of(2.5, {3, 5}, {1, 0.5f}));
  EXPECT_DOUBLE_EQ(d.loss, 0.25);
  EXPECT_DOUBLE_EQ(d.worst_gradient, 0.5);
  EXPECT_EQ(d.worst_parameter, "b");
  EXPECT_TRUE(d.within(0.5));
  EXPECT_FALSE(d.within(0.49));
}

TEST(SwitchVariants, NanNeverPasses) {
  const GradientCheck reference = check_of(2.0, {3, 4}, {1, 0});
  const CheckDifference in_gradient = compare_checks(reference, check_of(2.0, {3, 4}, {NAN, 0}));
  EXPECT_TRUE(std::isnan(in_gradient.worst_gradient));
  EXPECT_EQ(in_gradient.worst_parameter, "b");
  EXPECT_FALSE(in_gradient.within(1e30));
  // A NaN first stays the worst, whatever follows.
  EXPECT_TRUE(std::isnan(compare_checks(reference, check_of(2.0, {NAN, 4}, {100, 0})).worst_gradient));
  EXPECT_FALSE(compare_checks(reference, check_of(NAN, {3, 4}, {1, 0})).within(1e30));
  // A gradient where the defaults' is zero is infinitely far, not 0/0.
  const GradientCheck zero = check_of(2.0, {0, 0}, {1, 0});
  EXPECT_FALSE(compare_checks(zero, check_of(2.0, {0, 1e-20f}, {1, 0})).within(1e6));
  EXPECT_TRUE(compare_checks(zero, zero).within(0.0));
}

TEST(SwitchVariants, ChecksOfDifferentModelsAreRefused) {
  const GradientCheck reference = check_of(2.0, {3, 4}, {1, 0});
  EXPECT_THROW(compare_checks(reference, GradientCheck{2.0, {{"a", {3, 4}}}}), Error);
  EXPECT_THROW(compare_checks(reference, GradientCheck{2.0, {{"a", {3, 4}}, {"c", {1, 0}}}}), Error);
}

}  // namespace
}  // namespace sg
