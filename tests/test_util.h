// Helpers shared by the tests: seeded random inputs, relative comparisons and
// an f64 central finite-difference gradient.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

namespace sg::test {

inline std::vector<float> random_floats(size_t n, uint32_t seed, float low = -1.0f, float high = 1.0f) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> distribution(low, high);
  std::vector<float> values(n);
  for (float& v : values) v = distribution(generator);
  return values;
}

inline std::vector<double> to_double(const std::vector<float>& values) {
  return std::vector<double>(values.begin(), values.end());
}

// |actual - expected| <= rtol * |expected| + atol, element by element, naming
// the first mismatch (and how many there are) on failure.
template <typename A, typename E>
::testing::AssertionResult all_close(const std::vector<A>& actual, const std::vector<E>& expected, double rtol,
                                     double atol = 0.0) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure() << "sizes differ: " << actual.size() << " vs " << expected.size();
  }
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    double a = double(actual[i]), e = double(expected[i]);
    bool ok = std::abs(a - e) <= rtol * std::abs(e) + atol || (std::isnan(a) && std::isnan(e));
    if (!ok && bad++ == 0) first = i;
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << actual.size() << " elements differ; first at " << first
                                       << ": " << double(actual[first]) << " vs expected " << double(expected[first])
                                       << " (rtol " << rtol << ", atol " << atol << ")";
}

// Gradient of L(x) = sum_i f(x)_i * weights_i by f64 central differences.
// `weights` plays the upstream gradient dL/dout.
inline std::vector<double> finite_difference_gradient(
    const std::function<std::vector<double>(const std::vector<double>&)>& f, std::vector<double> x,
    const std::vector<double>& weights, double h = 1e-6) {
  auto loss = [&](const std::vector<double>& point) {
    std::vector<double> out = f(point);
    double total = 0.0;
    for (size_t i = 0; i < out.size(); ++i) total += out[i] * weights[i];
    return total;
  };
  std::vector<double> gradient(x.size());
  for (size_t j = 0; j < x.size(); ++j) {
    double saved = x[j];
    x[j] = saved + h;
    double plus = loss(x);
    x[j] = saved - h;
    double minus = loss(x);
    x[j] = saved;
    gradient[j] = (plus - minus) / (2.0 * h);
  }
  return gradient;
}

}  // namespace sg::test
