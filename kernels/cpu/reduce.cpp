#include "kernels/cpu/reduce.h"

#include <algorithm>
#include <cmath>

namespace sg::cpu {

void sum_forward(float* out, const float* in, int64_t n) {
  double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) total += in[i];
  *out = float(total);
}

void max_forward(float* out, const float* in, int64_t n) {
  float best = -INFINITY;
#pragma omp parallel for reduction(max : best) schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) best = std::max(best, in[i]);
  *out = best;
}

void squared_norm_forward(float* out, const float* in, int64_t n) {
  double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) total += double(in[i]) * in[i];
  *out = float(total);
}

}  // namespace sg::cpu
