// bench_gemm: times C = A @ B through shardgrad's matmul on each available
// device for the GEMM shapes of a GPT training step, and prints a table of
// milliseconds and TFLOP/s (2*M*N*K flops per product).
//
//   build/bin/bench_gemm [--device cpu|cuda|all] [--repeat N]
//
// The CUDA rows include a device synchronization per measurement (through
// reading the result's first element), so they time the whole kernel.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "tensor/ops.h"
#include "tensor/rng.h"

namespace {

struct Problem {
  const char* name;
  int64_t m, n, k;
  sg::DType dtype;
};

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

void run(sg::Device device, const Problem& p, int repeat) {
  sg::TensorOptions options = sg::TensorOptions().device(device);
  sg::Tensor a = sg::Tensor::empty({p.m, p.k}, options), b = sg::Tensor::empty({p.k, p.n}, options);
  sg::fill_normal_(a, 1, "a");
  sg::fill_normal_(b, 1, "b");
  a = a.to(p.dtype);
  b = b.to(p.dtype);
  std::vector<double> seconds;
  for (int i = 0; i < repeat + 2; ++i) {
    auto start = std::chrono::steady_clock::now();
    sg::Tensor c = sg::matmul(a, b);
    (void)c.at({0, 0});  // waits for the device
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (i >= 2) seconds.push_back(elapsed);  // the first two warm up caches and cuBLAS
  }
  double t = median(seconds);
  double tflops = 2.0 * double(p.m) * double(p.n) * double(p.k) / t / 1e12;
  std::printf("| %-6s | %-28s | %5s | %10.3f | %8.3f |\n", device.str().c_str(), p.name,
              std::string(sg::dtype_name(p.dtype)).c_str(), t * 1e3, tflops);
}

}  // namespace

int main(int argc, char** argv) {
  std::string which = "all";
  int repeat = 10;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--device") && i + 1 < argc) which = argv[++i];
    else if (!std::strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = std::max(1, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: %s [--device cpu|cuda|all] [--repeat N]\n", argv[0]);
      return 2;
    }
  }
  try {
    std::printf("| device | problem                      | dtype |         ms |   TFLOP/s |\n");
    std::printf("|--------|------------------------------|-------|------------|----------|\n");
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
      } else {
        for (sg::DType dtype : {sg::DType::f32, sg::DType::bf16}) {
          for (const Problem& p : {Problem{"qkv 8192x2304x768", 8192, 2304, 768, dtype},
                                   Problem{"fc 8192x3072x768", 8192, 3072, 768, dtype},
                                   Problem{"square 4096^3", 4096, 4096, 4096, dtype},
                                   Problem{"lm-head 8192x50304x768", 8192, 50304, 768, dtype}}) {
            run(sg::Device::cuda(), p, repeat);
          }
        }
      }
    }
  } catch (const sg::Error& error) {
    std::fprintf(stderr, "bench_gemm: %s\n", error.what());
    return 1;
  }
  return 0;
}
