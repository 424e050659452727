// bench_layernorm: LayerNorm's kernels at a GPT step's shape, against the
// bytes they must move. A GPT-2 step runs 25 LayerNorm backwards (24 with
// the residual stream's gradient added in the same pass) and as many
// forwards (the residual add fused in); each reads and writes four (rows,
// C) arrays, so at full memory bandwidth each takes bytes / bandwidth.
// The backward's three ways (kernels/cuda/layernorm_backward.cu) side by
// side: two kernels, fused (the default), pipelined (off by default).
//
//   build/bin/bench_layernorm [--device cuda|cpu] [--dtype bf16|f32] [--rows 8192] [--embd 768]
//                             [--calls 50] [--repeat 5]
//
// Rows: micro-batch x context (8192 is GPT-2's at micro-batch 8, 32768 at
// 32). Each figure is the median over --repeat samples (after one warm-up)
// of --calls calls issued back to back and one device synchronization, per
// call: the kernels' time with little of the synchronization's.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "examples/cli.h"
#include "tensor/ops.h"
#include "tensor/rng.h"

namespace sg {
namespace {

// Milliseconds a call of fn (see the top of the file).
double ms_per_call(int repeat, int calls, const std::function<Tensor()>& fn) {
  std::vector<double> samples;
  for (int i = 0; i <= repeat; ++i) {
    const auto start = std::chrono::steady_clock::now();
    Tensor last;
    for (int c = 0; c < calls; ++c) last = fn();
    (void)last.view({-1}).slice(0, 0, 1).to(Device::cpu());  // waits for the device
    const double elapsed = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (i > 0) samples.push_back(elapsed / calls);
  }
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

int run(int argc, char** argv) {
  const auto flags = parse_args(argc, argv,
                                {{"device", "cuda"}, {"dtype", "bf16"}, {"rows", "8192"}, {"embd", "768"},
                                 {"calls", "50"}, {"repeat", "5"}},
                                "bench_layernorm [--device cuda|cpu] [--dtype bf16|f32] [--rows 8192] [--embd 768] "
                                "[--calls 50] [--repeat 5]");
  if (!flags) return 0;  // --help
  std::map<std::string, std::string> a = *flags;
  const Device device = choice_arg(a, "device", {"cuda", "cpu"}) == "cuda" ? Device::cuda() : Device::cpu();
  SG_CHECK(device.is_cpu() || cuda_available(), "no GPU visible; use --device cpu");
  const DType dtype = choice_arg(a, "dtype", {"bf16", "f32"}) == "bf16" ? DType::bf16 : DType::f32;
  const int64_t rows = int_arg(a, "rows"), C = int_arg(a, "embd");
  const int calls = parse_int32_flag("calls", a["calls"]), repeat = parse_int32_flag("repeat", a["repeat"]);
  SG_CHECK(rows > 0 && C > 0 && calls > 0 && repeat > 0, "--rows, --embd, --calls and --repeat must be positive");
  auto input = [&](const Shape& shape, const char* name, double std) {
    Tensor t = Tensor::empty(shape);
    fill_normal_(t, 5, name, 0.0, std);
    return t.to(dtype).to(device);
  };
  const Tensor x = input({rows, C}, "bench-x", 1.0), y = input({rows, C}, "bench-y", 1.0);
  const Tensor dy = input({rows, C}, "bench-dy", 1.0), residual = input({rows, C}, "bench-residual", 1.0);
  const Tensor w = input({C}, "bench-w", 0.1), b = input({C}, "bench-b", 0.1);
  const LayerNormOutput ln = layernorm(x, w, b);

  // Four (rows, C) arrays each way; the statistics and parameters are a few KiB more.
  const double bytes = 4.0 * double(rows) * double(C) * double(dtype_size(dtype));
  std::printf("LayerNorm, %lld rows of %lld, %s on %s: %.1f MB a call each way\n", (long long)rows, (long long)C,
              std::string(dtype_name(dtype)).c_str(), device.str().c_str(), bytes / 1e6);
  std::printf("| kernel | us a call | GB/s |\n|---|---|---|\n");
  auto row = [&](const char* name, double ms) {
    std::printf("| %s | %.1f | %.0f |\n", name, ms * 1e3, bytes / (ms * 1e-3) / 1e9);
    std::fflush(stdout);
  };
  row("forward with the residual add (add_layernorm)",
      ms_per_call(repeat, calls, [&] { return add_layernorm(x, y, w, b).norm.out; }));
  auto backward = [&] { return layernorm_backward(dy, x, w, ln.mean, ln.rstd, residual).dx; };
  with_env("SG_LAYERNORM_FUSED_BACKWARD", "0", [&] {
    row("backward, two kernels (SG_LAYERNORM_FUSED_BACKWARD=0)", ms_per_call(repeat, calls, backward));
  });
  with_env("SG_LAYERNORM_FUSED_BACKWARD", nullptr,
               [&] { row("backward, fused (the default)", ms_per_call(repeat, calls, backward)); });
  with_env("SG_LAYERNORM_PIPELINED_BACKWARD", "1", [&] {
    row("backward, pipelined (SG_LAYERNORM_PIPELINED_BACKWARD=1; 16-bit types, else fused)",
        ms_per_call(repeat, calls, backward));
  });
  return 0;
}

}  // namespace
}  // namespace sg

int main(int argc, char** argv) {
  return sg::run_main("bench_layernorm", [&] { return sg::run(argc, argv); });
}
