// Shared by the CUDA tests: a fixture that skips (and says why) without a
// GPU, and helpers that run one op on the CPU and on CUDA for comparison.
#pragma once

#include <gtest/gtest.h>

#include "tensor/ops.h"
#include "tensor/rng.h"
#include "tests/test_util.h"

namespace sg::test {

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU visible: this CUDA test did not run";
  }
};

inline Tensor gpu(const Tensor& t) { return t.to(Device::cuda(0)); }

inline Tensor random_tensor(const Shape& shape, const char* name, double std = 1.0) {
  Tensor t = Tensor::empty(shape);
  fill_normal_(t, 77, name, 0.0, std);
  return t;
}

// The CUDA result (brought back as f32) against the CPU twin's.
inline ::testing::AssertionResult same_as_cpu(const Tensor& cuda_result, const Tensor& cpu_result, double rtol,
                                              double atol) {
  if (!cuda_result.device().is_cuda()) return ::testing::AssertionFailure() << "result is not on CUDA";
  if (cuda_result.shape() != cpu_result.shape()) {
    return ::testing::AssertionFailure() << "shapes differ: " << cuda_result.str() << " vs " << cpu_result.str();
  }
  return all_close(cuda_result.to_vector<float>(), cpu_result.to_vector<float>(), rtol, atol);
}

// Tolerances from ../shared/STYLE.md: f32 1e-5 relative, bf16 1e-2 relative.
constexpr double kF32 = 1e-5, kBf16 = 1e-2;

}  // namespace sg::test
