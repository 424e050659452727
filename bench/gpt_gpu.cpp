// bench_gpt: tokens/s and model FLOPs utilization of full GPT training steps
// (forward, backward, clipping, AdamW through ZeroOptimizer in a world of
// one, mixed precision as asked) on a device. The GPU issue's benchmark:
//
//   build/bin/bench_gpt --device cuda --dtype bf16                 # GPT-2 124M, T 1024, batch 8
//   build/bin/bench_gpt --device cpu --layers 2 --embd 64 --heads 2 --vocab 65 --ctx 64 --batch 4
//
// FLOPs per token: 6 N + 6 L C T (N parameters); MFU against --peak-tflops
// (989: an H100's dense bf16). Each step ends by reading the loss, which
// waits for the device, so the times are whole steps. Prints one JSON line.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "dist/world.h"
#include "examples/cli.h"
#include "examples/zero_parameters.h"
#include "nn/gpt.h"
#include "optim/zero.h"
#include "tensor/device.h"

namespace sg {
namespace {

int run(int argc, char** argv) {
  std::map<std::string, std::string> a = {{"device", "cuda"}, {"dtype", "bf16"}, {"layers", "12"}, {"heads", "12"},
                                          {"embd", "768"},    {"vocab", "50304"}, {"ctx", "1024"},  {"batch", "8"},
                                          {"warmup", "2"},    {"steps", "5"},     {"peak-tflops", "989"},
                                          {"profile-last", "0"}};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    SG_CHECK(flag.rfind("--", 0) == 0 && a.count(flag.substr(2)), "unknown flag ", flag);
    a[flag.substr(2)] = argv[i + 1];
  }
  const Device device = parse_device(a["device"]);
  SG_CHECK(device.is_cpu() || cuda_available(), "no GPU visible; use --device cpu");
  const DType dtype = a["dtype"] == "bf16" ? DType::bf16 : a["dtype"] == "fp16" ? DType::f16 : DType::f32;
  GptConfig cfg;
  cfg.n_layer = std::stoll(a["layers"]), cfg.n_head = std::stoll(a["heads"]), cfg.n_embd = std::stoll(a["embd"]);
  cfg.vocab_size = std::stoll(a["vocab"]), cfg.block_size = std::stoll(a["ctx"]);
  std::optional<ParametersOn> on(std::in_place, device);
  Gpt model(cfg);
  on.reset();
  ZeroOptimizer zero(zero_parameters(model, cfg.seed), world(),
                     {.stage = 0, .adam = {.lr = 3e-4, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8}, .weight_decay = 0.1,
                      .dtype = dtype, .reduce_dtype = dtype});
  const int64_t B = std::stoll(a["batch"]), T = cfg.block_size;
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> token(0, int32_t(cfg.vocab_size - 1));
  std::vector<double> seconds;
  double loss = 0;
  const int64_t warmup = std::stoll(a["warmup"]), steps = std::stoll(a["steps"]);
  for (int64_t step = 0; step < warmup + steps; ++step) {
    std::vector<int32_t> x(static_cast<size_t>(B * T)), y(static_cast<size_t>(B * T));
    for (auto& v : x) v = token(rng);
    for (auto& v : y) v = token(rng);
    Tensor xs = Tensor::from_vector(x, {B, T}).to(device), ys = Tensor::from_vector(y, {B, T}).to(device);
    // --profile-last 1: only the last step under a profiler started with
    // --profile-from-start off (bench/kernel_profile.py), not the model's setup.
    const bool profiled = a["profile-last"] == "1" && step + 1 == warmup + steps;
    if (profiled) cuda_profiler_start();
    const auto start = std::chrono::steady_clock::now();
    Variable l = model.loss(xs, ys);
    zero.backward(l, true);
    zero.clip_grad_norm(1.0);
    zero.step(3e-4);
    zero.zero_grad();
    loss = l.data().item();  // waits for the device
    if (profiled) cuda_profiler_stop();
    if (step >= warmup) seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[seconds.size() / 2], tokens = double(B * T);
  const double N = double(model.parameter_count());
  const double flops = (6 * N + 6 * double(cfg.n_layer * cfg.n_embd * T)) * tokens / median;
  std::printf("{\"framework\": \"shardgrad\", \"device\": \"%s\", \"dtype\": \"%s\", \"parameters\": %.0f, "
              "\"batch\": %lld, \"ctx\": %lld, \"ms_per_step\": %.2f, \"tokens_per_s\": %.1f, \"tflops\": %.2f, "
              "\"mfu\": %.4f, \"loss\": %.4f}\n",
              device.str().c_str(), a["dtype"].c_str(), N, (long long)B, (long long)T, median * 1000, tokens / median,
              flops / 1e12, flops / (std::stod(a["peak-tflops"]) * 1e12), loss);
  return 0;
}

}  // namespace
}  // namespace sg

int main(int argc, char** argv) {
  return sg::run_main("bench_gpt", [&] { return sg::run(argc, argv); });
}
