// bench_train: times full training steps of a GPT on the CPU (forward,
// backward, global-norm clipping, AdamW) and prints one JSON line.
// bench/train_cpu.py runs it beside the same model in PyTorch.
//
//   build/bin/bench_train --layers 4 --heads 4 --embd 256 --ctx 128 --batch 8 --vocab 65
//                         [--threads 2] [--warmup 2] [--steps 7]
//   build/bin/bench_train --peak 1 [--threads 2]     # SGEMM GFLOP/s (2048^3, best of 6)
//
// Fresh random tokens every step (drawn outside the timed region); the
// warm-up steps are not timed; the figure is the median step.
// FLOPs per token: 6 N + 6 L C T (N parameters; the attention scores and
// their use, counted for the causal half).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "examples/cli.h"
#include "nn/gpt.h"
#include "optim/optimizers.h"
#include "tensor/ops.h"

namespace sg {
namespace {

int run(int argc, char** argv) {
  std::map<std::string, int64_t> a = {{"layers", 4}, {"heads", 4}, {"embd", 256}, {"ctx", 128}, {"batch", 8},
                                      {"vocab", 65}, {"threads", 2}, {"warmup", 2}, {"steps", 7},
                                      {"peak", 0}};
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    SG_CHECK(flag.rfind("--", 0) == 0 && a.count(flag.substr(2)), "unknown flag ", flag);
    a[flag.substr(2)] = parse_int_flag(flag.substr(2), argv[i + 1]);
  }
  omp_set_num_threads(int(a["threads"]));
  if (a["peak"]) {  // the best of 5 f32 GEMMs of 2048^3: this machine's SGEMM rate through shardgrad
    Tensor x = Tensor::ones({2048, 2048}), w = Tensor::ones({2048, 2048});
    double best = 1e30;
    for (int i = 0; i < 6; ++i) {
      const auto start = std::chrono::steady_clock::now();
      Tensor c = matmul(x, w);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    std::printf("{\"sgemm_gflops\": %.1f}\n", 2.0 * 2048 * 2048 * 2048 / best / 1e9);
    return 0;
  }
  GptConfig cfg;
  cfg.vocab_size = a["vocab"], cfg.block_size = a["ctx"], cfg.n_layer = a["layers"], cfg.n_head = a["heads"];
  cfg.n_embd = a["embd"];
  Gpt model(cfg);
  ParamGroup decayed{{}, 0.1}, other{{}, 0.0};
  for (const NamedParameter& p : model.named_parameters()) (p.init.decays ? decayed : other).params.push_back(p.variable);
  AdamW adam({decayed, other}, {.lr = 3e-4, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8});
  const std::vector<Variable> params = model.parameters();

  const int64_t B = a["batch"], T = a["ctx"];
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> token(0, int32_t(cfg.vocab_size - 1));
  std::vector<double> ms;
  double loss = 0;
  for (int64_t step = 0; step < a["warmup"] + a["steps"]; ++step) {
    std::vector<int32_t> x(size_t(B * T)), y(size_t(B * T));
    for (auto& v : x) v = token(rng);
    for (auto& v : y) v = token(rng);
    Tensor xs = Tensor::from_vector(x, {B, T}), ys = Tensor::from_vector(y, {B, T});
    const auto start = std::chrono::steady_clock::now();
    Variable l = model.loss(xs, ys);
    l.backward();
    clip_grad_norm(params, 1.0);
    adam.step();
    adam.zero_grad();
    loss = l.data().item();
    const double elapsed = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (step >= a["warmup"]) ms.push_back(elapsed);
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  const double tokens = double(B * T), N = double(model.parameter_count());
  const double flops = (6 * N + 6 * double(cfg.n_layer * cfg.n_embd * T)) * tokens;
  std::printf("{\"framework\": \"shardgrad\", \"ms_per_step\": %.2f, \"tokens_per_s\": %.1f, \"gflops\": %.2f, "
              "\"parameters\": %.0f, \"threads\": %lld, \"loss\": %.4f}\n",
              median, tokens / (median / 1000), flops / (median / 1000) / 1e9, N, (long long)a["threads"], loss);
  return 0;
}

}  // namespace
}  // namespace sg

int main(int argc, char** argv) {
  return sg::run_main("bench_train", [&] { return sg::run(argc, argv); });
}
