// bench_kernels: Google Benchmark timings of the CPU kernels a GPT step
// spends its time in, at the shapes of bench/train_cpu.py's configurations
// (b: 6 layers, 384 channels, context 256, batch 8; c: GPT-2 124M, context
// 64, batch 4), through the tensor ops (so dispatch is included).
//
//   build/bin/bench_kernels [--benchmark_filter=Gemm] [--benchmark_repetitions=5]
//
// Threads: OMP_NUM_THREADS (default: all cores).
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "kernels/adamw_math.h"
#include "tensor/ops.h"
#include "tensor/rng.h"

namespace sg {
namespace {

Tensor randn(const Shape& shape, const std::string& name) {
  Tensor t = Tensor::empty(shape);
  fill_normal_(t, 1, name);
  return t;
}

Tensor tokens(int64_t rows, int64_t vocab) {
  std::vector<int32_t> ids(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) ids[size_t(i)] = int32_t((i * 7919) % vocab);
  return Tensor::from_vector(ids, {rows});
}

// C (M x N) = A (M x K) @ B (K x N); counters in FLOP/s.
void Gemm(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  Tensor a = randn({M, K}, "a"), b = randn({K, N}, "b");
  for (auto _ : state) benchmark::DoNotOptimize(matmul(a, b).data_ptr());
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * double(M * N * K), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(Gemm)
    ->Args({2048, 1152, 384})   // (b) qkv
    ->Args({2048, 1536, 384})   // (b) mlp.c_fc
    ->Args({2048, 384, 1536})   // (b) mlp.c_proj
    ->Args({256, 50304, 768})   // (c) lm head
    ->Args({256, 3072, 768})    // (c) mlp.c_fc
    ->Unit(benchmark::kMillisecond);

void Attention(benchmark::State& state) {  // (b): B 8, T 256, C 384, 6 heads
  Tensor qkv = randn({8, 256, 3 * 384}, "qkv");
  for (auto _ : state) benchmark::DoNotOptimize(attention(qkv, 6).out.data_ptr());
}
BENCHMARK(Attention)->Unit(benchmark::kMillisecond);

void AttentionBackward(benchmark::State& state) {
  Tensor qkv = randn({8, 256, 3 * 384}, "qkv"), dout = randn({8, 256, 384}, "dout");
  AttentionOutput forward = attention(qkv, 6);
  for (auto _ : state) benchmark::DoNotOptimize(attention_backward(dout, qkv, forward.att, 6).data_ptr());
}
BENCHMARK(AttentionBackward)->Unit(benchmark::kMillisecond);

void LayerNorm(benchmark::State& state) {  // (b): 2048 rows of 384
  Tensor x = randn({2048, 384}, "x"), w = Tensor::ones({384}), b = Tensor::zeros({384});
  for (auto _ : state) benchmark::DoNotOptimize(layernorm(x, w, b).out.data_ptr());
}
BENCHMARK(LayerNorm)->Unit(benchmark::kMicrosecond);

void LayerNormBackward(benchmark::State& state) {
  Tensor x = randn({2048, 384}, "x"), w = Tensor::ones({384}), b = Tensor::zeros({384}), dy = randn({2048, 384}, "dy");
  LayerNormOutput forward = layernorm(x, w, b);
  for (auto _ : state) benchmark::DoNotOptimize(layernorm_backward(dy, x, w, forward.mean, forward.rstd).dx.data_ptr());
}
BENCHMARK(LayerNormBackward)->Unit(benchmark::kMicrosecond);

void CrossEntropy(benchmark::State& state) {  // (c): 256 rows of 50304 logits
  Tensor logits = randn({256, 50304}, "logits"), targets = tokens(256, 50304);
  for (auto _ : state) benchmark::DoNotOptimize(cross_entropy(logits, targets).losses.data_ptr());
}
BENCHMARK(CrossEntropy)->Unit(benchmark::kMillisecond);

void CrossEntropyBackward(benchmark::State& state) {
  Tensor logits = randn({256, 50304}, "logits"), targets = tokens(256, 50304), dl = Tensor::full({256}, 1.0 / 256);
  CrossEntropyOutput forward = cross_entropy(logits, targets);
  for (auto _ : state) {
    benchmark::DoNotOptimize(cross_entropy_backward(dl, logits, forward.lse, targets).data_ptr());
  }
}
BENCHMARK(CrossEntropyBackward)->Unit(benchmark::kMillisecond);

void AdamW(benchmark::State& state) {  // (c)'s 124M parameters are 12 of these; bytes moved per second
  const int64_t n = state.range(0);
  Tensor p = randn({n}, "p"), g = randn({n}, "g"), m = Tensor::zeros({n}), v = Tensor::zeros({n});
  AdamWParams hp;
  hp.lr = 1e-3f, hp.beta1 = 0.9f, hp.beta2 = 0.95f, hp.eps = 1e-8f, hp.weight_decay = 0.1f, hp.step = 1;
  for (auto _ : state) {
    adamw_update_(p, m, v, g, hp);
    benchmark::ClobberMemory();
  }
  // Reads p, g, m, v and writes p, m, v: 28 bytes per element.
  state.counters["bytes/s"] = benchmark::Counter(28.0 * double(n), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(AdamW)->Arg(10'000'000)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace sg

BENCHMARK_MAIN();
