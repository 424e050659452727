// bench_attention: the three forms of causal self-attention side by side
// (tensor/ops_attention.cpp): naive kernels, batched GEMMs around the masked
// softmax, fused (flash) kernels. Forward and backward milliseconds (median
// of --repeat after one warm-up), the bytes each keeps for backward and the
// useful TFLOP/s of forward and backward together, at GPT-2 124M's
// attention shape by default.
//
//   build/bin/bench_attention [--device cuda|cpu] [--dtype bf16|f32] [--batch 8] [--ctx 1024]
//                             [--embd 768] [--heads 12] [--repeat 5]
//
// CUDA timings include a device synchronization (reading one element of the
// result), so they time every kernel of the call. Which form attention()
// picks is the question this answers (docs/gpu.md); on tensor cores it also
// times the builds of the kernels that SG_FLASH_FORWARD_MORE_WARPS and
// SG_FLASH_BACKWARD_MORE_WARPS choose.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "examples/cli.h"
#include "tensor/ops.h"
#include "tensor/rng.h"
#ifdef SG_CUDA
#include "kernels/cuda/flash_attention_tc.h"
#endif

namespace sg {
namespace {

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// Milliseconds of fn (median of `repeat` after one warm-up); `sync` reads a
// result element so device work is included.
double time_ms(int repeat, const std::function<Tensor()>& fn) {
  std::vector<double> ms;
  for (int i = 0; i <= repeat; ++i) {
    const auto start = std::chrono::steady_clock::now();
    Tensor result = fn();
    (void)result.view({-1}).slice(0, 0, 1).to(Device::cpu());  // waits for the device
    const double elapsed = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (i > 0) ms.push_back(elapsed);
  }
  return median(ms);
}

int run(int argc, char** argv) {
  std::map<std::string, std::string> a = {{"device", "cuda"}, {"dtype", "bf16"}, {"batch", "8"},  {"ctx", "1024"},
                                          {"embd", "768"},    {"heads", "12"},   {"repeat", "5"}};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    SG_CHECK(flag.rfind("--", 0) == 0 && a.count(flag.substr(2)), "unknown flag ", flag,
             "; see the top of bench/attention.cpp");
    a[flag.substr(2)] = argv[i + 1];
  }
  const Device device = choice_arg(a, "device", {"cuda", "cpu"}) == "cuda" ? Device::cuda() : Device::cpu();
  SG_CHECK(device.is_cpu() || cuda_available(), "no GPU visible; use --device cpu");
  const DType dtype = choice_arg(a, "dtype", {"bf16", "f32"}) == "bf16" ? DType::bf16 : DType::f32;
  const int64_t B = int_arg(a, "batch"), T = int_arg(a, "ctx"), C = int_arg(a, "embd");
  const int64_t NH = int_arg(a, "heads");
  const int repeat = parse_int32_flag("repeat", a["repeat"]);
  SG_CHECK(B > 0 && T > 0 && NH > 0 && C > 0 && C % NH == 0 && repeat > 0,
           "--batch, --ctx, --heads and --repeat must be positive, and --embd a positive multiple of --heads");
  Tensor qkv = Tensor::empty({B, T, 3 * C});
  fill_normal_(qkv, 1, "bench-qkv", 0.0, 1.0);
  Tensor dout = Tensor::empty({B, T, C});
  fill_normal_(dout, 2, "bench-dout", 0.0, 1.0);
  qkv = qkv.to(dtype).to(device);
  dout = dout.to(dtype).to(device);

  std::printf("attention B %lld, T %lld, C %lld, %lld heads, %s on %s\n", (long long)B, (long long)T, (long long)C,
              (long long)NH, std::string(dtype_name(dtype)).c_str(), device.str().c_str());
  std::printf("| form | forward ms | backward ms | kept for backward besides qkv and the output (MiB) | "
              "TFLOP/s |\n|---|---|---|---|---|\n");
  // Useful FLOPs: the six products of forward (S, O) and backward (dV, dP, dQ, dK), each over the causal
  // half of the T x T scores: 6 B NH T^2 HS in all, whatever a form computes besides (as FlashAttention counts).
  const double useful_flops = 6.0 * double(B) * double(NH) * double(T) * double(T) * double(C / NH);
  auto row = [&](const char* form, double forward, double backward, int64_t kept) {
    std::printf("| %s | %.3f | %.3f | %.1f | %.2f |\n", form, forward, backward, double(kept) / double(1 << 20),
                useful_flops / ((forward + backward) * 1e-3) / 1e12);
    std::fflush(stdout);  // each row kept, should a later form fail (output to a file is block-buffered)
  };
  {
    AttentionOutput out = attention(qkv, NH);
    row("naive", time_ms(repeat, [&] { return attention(qkv, NH).out; }),
        time_ms(repeat, [&] { return attention_backward(dout, qkv, out.att, NH); }), out.att.nbytes());
  }
  {
    AttentionOutput out = gemm_attention(qkv, NH);
    row("GEMMs + masked softmax", time_ms(repeat, [&] { return gemm_attention(qkv, NH).out; }),
        time_ms(repeat, [&] { return gemm_attention_backward(dout, qkv, out.att, NH); }), out.att.nbytes());
  }
  auto fused_row = [&](const char* form) {
    FusedAttentionOutput out = fused_attention(qkv, NH);
    row(form, time_ms(repeat, [&] { return fused_attention(qkv, NH).out; }),
        time_ms(repeat, [&] { return fused_attention_backward(dout, qkv, out.out, out.lse, NH); }),
        out.lse.nbytes());
  };
  if (!fused_attention_on_tensor_cores(qkv, NH)) {
    fused_row("fused");
    return 0;
  }
  fused_row("fused (tensor cores)");
  // The tensor-core kernels' shapes side by side (kernels/cuda/flash_attention_tc.cu reads these at each call):
  // each built for its registers (no spills) instead of for more warps an SM.
  const std::pair<const char*, const char*> variants[] = {
      {"SG_FLASH_FORWARD_MORE_WARPS=0", "fused (tensor cores), forward for fewer warps"},
      {"SG_FLASH_BACKWARD_MORE_WARPS=0", "fused (tensor cores), backward for fewer warps"}};
  for (const auto& [setting, form] : variants) {
    const std::string name(setting, std::strchr(setting, '=')), value(std::strchr(setting, '=') + 1);
    with_env(name.c_str(), value.c_str(), [&] { fused_row(form); });
  }
#ifdef SG_CUDA
  // Hopper's warpgroup MMA (SG_FLASH_WGMMA=1; flash_attention_wgmma*.cu), where it applies: head size 64 on a
  // compute capability 9.0 GPU (its launches counted, so a row never shows the mma.sync kernels under its name).
  with_env("SG_FLASH_WGMMA", "1", [&] {
    const int64_t before = cuda::flash_wgmma_forwards();
    fused_attention(qkv, NH);
    if (cuda::flash_wgmma_forwards() == before) return;
    fused_row("fused (wgmma)");  // the products overlapping the exponentials (the default)
    with_env("SG_FLASH_WGMMA_OVERLAP", "0", [&] { fused_row("fused (wgmma), without overlap"); });
  });
#endif
  return 0;
}

}  // namespace
}  // namespace sg

int main(int argc, char** argv) {
  return sg::run_main("bench_attention", [&] { return sg::run(argc, argv); });
}
