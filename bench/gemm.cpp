// bench_gemm: times C = A @ B through shardgrad's matmul on each available
// device for the GEMM shapes of a GPT training step, and prints a table of
// milliseconds and TFLOP/s (2*M*N*K flops per product).
//
//   build/bin/bench_gemm [--device cpu|cuda|all] [--repeat N] [--candidates N] [--shrink F]
//
// A measurement is `kBatch` products then one device synchronization
// (reading the last result's first element), so a short GEMM is not timed
// with a synchronization's latency on top. --candidates N (CUDA, bf16) also
// times each problem with each of the first N algorithms cuBLASLt's
// heuristic offers (kernels/cuda/matmul_lt.h): whether its first answer,
// the one training takes, is the fastest for these shapes. --shrink F
// divides every dimension by F (a quick run in the CUDA emulator).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "tensor/ops.h"
#include "tensor/rng.h"
#ifdef SG_CUDA
#include "kernels/cuda/matmul_lt.h"
#endif

namespace {

constexpr int kBatch = 10;  // products per measurement

struct Problem {
  const char* name;
  int64_t m, n, k;
  sg::DType dtype;
  bool transposed_a = false;  // A read as the transpose of a stored (k, m): a weight gradient's dy^T
};

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// Milliseconds per product, the median of `repeat` measurements.
double time_ms(sg::Device device, const Problem& p, int repeat) {
  sg::TensorOptions options = sg::TensorOptions().device(device);
  sg::Tensor a = p.transposed_a ? sg::Tensor::empty({p.k, p.m}, options) : sg::Tensor::empty({p.m, p.k}, options);
  sg::Tensor b = sg::Tensor::empty({p.k, p.n}, options);
  sg::fill_normal_(a, 1, "a");
  sg::fill_normal_(b, 1, "b");
  a = a.to(p.dtype);
  b = b.to(p.dtype);
  const sg::Tensor a_view = p.transposed_a ? a.transpose(0, 1) : a;
  const int batch = device.is_cpu() ? 1 : kBatch;
  std::vector<double> seconds;
  for (int i = 0; i < repeat + 2; ++i) {
    auto start = std::chrono::steady_clock::now();
    sg::Tensor c;
    for (int j = 0; j < batch; ++j) c = sg::matmul(a_view, b);
    (void)c.at({0, 0});  // waits for the device
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (i >= 2) seconds.push_back(elapsed / batch);  // the first two warm up caches and cuBLAS
  }
  return median(seconds) * 1e3;
}

double tflops(const Problem& p, double ms) { return 2.0 * double(p.m) * double(p.n) * double(p.k) / ms / 1e9; }

void run(sg::Device device, const Problem& p, int repeat) {
  const double ms = time_ms(device, p, repeat);
  std::printf("| %-6s | %-32s | %5s | %10.3f | %8.1f |\n", device.str().c_str(), p.name,
              std::string(sg::dtype_name(p.dtype)).c_str(), ms, tflops(p, ms));
}

// Each of cuBLASLt's first `count` answers for the problem, timed; then
// back to its first for whatever runs next, timed again ("0 again"): on an
// H100 the same algorithm timed 5-20% slower here than in the main table
// (runs 9-10), so the repeat shows how far the GPU drifted during the rows.
void run_candidates(const Problem& p, int repeat, int count) {
#ifdef SG_CUDA
  for (int candidate = 0; candidate < count; ++candidate) {
    sg::cuda::set_lt_candidate(candidate);
    const double ms = time_ms(sg::Device::cuda(), p, repeat);
    const int found = sg::cuda::lt_candidates_found();
    if (found <= candidate) {
      std::printf("| %-32s | %9d | (the heuristic offered %d) |\n", p.name, candidate, found);
      break;
    }
    std::printf("| %-32s | %9d | %10.3f | %8.1f |\n", p.name, candidate, ms, tflops(p, ms));
  }
  sg::cuda::set_lt_candidate(0);
  const double again = time_ms(sg::Device::cuda(), p, repeat);
  std::printf("| %-32s | %9s | %10.3f | %8.1f |\n", p.name, "0 again", again, tflops(p, again));
#else
  (void)p, (void)repeat, (void)count;
#endif
}

std::vector<Problem> gpt2_problems(sg::DType dtype, int64_t shrink) {
  std::vector<Problem> problems{Problem{"qkv 8192x2304x768", 8192, 2304, 768, dtype},
          Problem{"proj 8192x768x768", 8192, 768, 768, dtype},
          Problem{"fc 8192x3072x768", 8192, 3072, 768, dtype},
          Problem{"fc2 8192x768x3072", 8192, 768, 3072, dtype},
          Problem{"fc dW 3072x768x8192 (dy^T x)", 3072, 768, 8192, dtype, true},
          Problem{"square 4096^3", 4096, 4096, 4096, dtype},
          Problem{"lm-head 8192x50304x768", 8192, 50304, 768, dtype},
          Problem{"lm-head dx 8192x768x50304", 8192, 768, 50304, dtype}};
  for (Problem& p : problems) p.m /= shrink, p.n /= shrink, p.k /= shrink;
  return problems;
}

}  // namespace

int main(int argc, char** argv) {
  std::string which = "all";
  int repeat = 10, candidates = 0, shrink = 1;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--device") && i + 1 < argc) which = argv[++i];
    else if (!std::strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--candidates") && i + 1 < argc) {
      candidates = std::clamp(std::atoi(argv[++i]), 0, 16);
    } else if (!std::strcmp(argv[i], "--shrink") && i + 1 < argc) {
      shrink = std::clamp(std::atoi(argv[++i]), 1, 256);
    } else {
      std::fprintf(stderr, "usage: %s [--device cpu|cuda|all] [--repeat N] [--candidates N (at most 16)] "
                   "[--shrink F]\n",
                   argv[0]);
      return 2;
    }
  }
  try {
    std::printf("| device | problem                          | dtype |         ms |  TFLOP/s |\n");
    std::printf("|--------|----------------------------------|-------|------------|----------|\n");
    if (which == "cpu" || which == "all") {
      for (const Problem& p : {Problem{"qkv 512x1152x384 (b)", 512, 1152, 384, sg::DType::f32},
                               Problem{"fc 512x1536x384 (b)", 512, 1536, 384, sg::DType::f32},
                               Problem{"lm-head 256x50304x768 (c)", 256, 50304, 768, sg::DType::f32}}) {
        run(sg::Device::cpu(), p, repeat);
      }
    }
    if (which == "cuda" || which == "all") {
      if (!sg::cuda_available()) {
        std::printf("(no CUDA device: GPU rows skipped)\n");
        return 0;
      }
      if (shrink > 1) std::printf("(every dimension below divided by %d: --shrink)\n", shrink);
      for (sg::DType dtype : {sg::DType::f32, sg::DType::bf16}) {
        for (const Problem& p : gpt2_problems(dtype, shrink)) run(sg::Device::cuda(), p, repeat);
      }
      if (candidates > 0) {
        std::printf("\ncuBLASLt's candidates, bf16 (0: the heuristic's first, what training runs)\n\n");
        std::printf("| problem                          | candidate |         ms |  TFLOP/s |\n");
        std::printf("|----------------------------------|-----------|------------|----------|\n");
        for (const Problem& p : gpt2_problems(sg::DType::bf16, shrink)) run_candidates(p, repeat, candidates);
      }
    }
  } catch (const sg::Error& error) {
    std::fprintf(stderr, "bench_gemm: %s\n", error.what());
    return 1;
  }
  return 0;
}
