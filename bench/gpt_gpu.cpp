// bench_gpt: tokens/s and model FLOPs utilization of full GPT training steps
// (forward, backward, clipping, AdamW through ZeroOptimizer in a world of
// one, mixed precision as asked) on a device. The GPU issue's benchmark:
//
//   build/bin/bench_gpt --device cuda --dtype bf16                 # GPT-2 124M, T 1024, batch 8
//   build/bin/bench_gpt --device cpu --layers 2 --embd 64 --heads 2 --vocab 65 --ctx 64 --batch 4
//   build/bin/bench_gpt --variants "wgmma:SG_FLASH_WGMMA=1 fused_dq:SG_FLASH_FUSED_DQ=1" --rounds 3
//   build/bin/bench_gpt --batch 32 --loss-chunk 4096    # the LM head and loss 4096 tokens at a time
//
// FLOPs per token: 6 N + 6 L C T (N parameters); MFU against --peak-tflops
// (989: an H100's dense bf16). Each step ends by reading the loss, which
// waits for the device, so the times are whole steps. Prints one JSON line;
// with --variants (bench/switch_variants.h), the variants' steps taking
// turns for --rounds rounds of --steps each (each first checked against the
// defaults' gradients), then a table and a JSON line per variant.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "bench/switch_variants.h"
#include "dist/world.h"
#include "examples/cli.h"
#include "examples/zero_parameters.h"
#include "nn/gpt.h"
#include "optim/zero.h"
#include "tensor/allocator.h"
#include "tensor/device.h"
#include "tools/activation_memory.h"

namespace sg {
namespace {

struct Batch {
  Tensor x, y;
};

// The model, its optimizer and the batches every step cycles through (the
// same ones for every variant).
struct Bench {
  Device device;
  DType dtype = DType::f32;  // what the model computes in (f32 masters and moments)
  GptConfig cfg;
  int64_t B = 0, T = 0;
  int64_t loss_chunk = 0;  // --loss-chunk: the LM head and loss this many tokens at a time (0: all)
  std::unique_ptr<Gpt> model;
  std::unique_ptr<ZeroOptimizer> zero;
  std::vector<Batch> batches;
  double peak_flops = 0;

  double tokens() const { return double(B * T); }
  double flops_per_step() const {
    const double N = double(model->parameter_count());
    return (6 * N + 6 * double(cfg.n_layer * cfg.n_embd * T)) * tokens();
  }
};

Bench make_bench(std::map<std::string, std::string>& a) {
  Bench bench;
  bench.device = parse_device(a["device"]);
  SG_CHECK(bench.device.is_cpu() || cuda_available(), "no GPU visible; use --device cpu");
  const std::string& type = choice_arg(a, "dtype", {"bf16", "fp16", "f32"});
  const DType dtype = type == "bf16" ? DType::bf16 : type == "fp16" ? DType::f16 : DType::f32;
  bench.dtype = dtype;
  GptConfig& cfg = bench.cfg;
  cfg.n_layer = int_arg(a, "layers"), cfg.n_head = int_arg(a, "heads"), cfg.n_embd = int_arg(a, "embd");
  cfg.vocab_size = int_arg(a, "vocab"), cfg.block_size = int_arg(a, "ctx");
  bench.B = int_arg(a, "batch"), bench.T = cfg.block_size;
  SG_CHECK(bench.B >= 1, "--batch must be at least 1, got ", bench.B);
  bench.peak_flops = number_arg(a, "peak-tflops") * 1e12;
  std::optional<ParametersOn> on(std::in_place, bench.device);
  bench.model = std::make_unique<Gpt>(cfg);
  on.reset();
  bench.loss_chunk = int_arg(a, "loss-chunk");
  SG_CHECK(bench.loss_chunk >= 0, "--loss-chunk must be >= 0 tokens (0: all at once), got ", bench.loss_chunk);
  bench.model->loss_chunk_rows(bench.loss_chunk);
  bench.zero = std::make_unique<ZeroOptimizer>(
      zero_parameters(*bench.model, cfg.seed), world(),
      ZeroOptions{.stage = 0, .adam = {.lr = 3e-4, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8}, .weight_decay = 0.1,
                  .dtype = dtype, .reduce_dtype = dtype});
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> token(0, int32_t(cfg.vocab_size - 1));
  for (int i = 0; i < 4; ++i) {  // random tokens: a step's time does not depend on them
    std::vector<int32_t> x(static_cast<size_t>(bench.B * bench.T)), y(x.size());
    for (auto& v : x) v = token(rng);
    for (auto& v : y) v = token(rng);
    bench.batches.push_back({Tensor::from_vector(x, {bench.B, bench.T}).to(bench.device),
                             Tensor::from_vector(y, {bench.B, bench.T}).to(bench.device)});
  }
  return bench;
}

// One training step, timed to the loss's arrival on the host; its loss.
double train_step(Bench& bench, const Batch& batch, bool profiled, double* loss) {
  if (profiled) cuda_profiler_start();
  const auto start = std::chrono::steady_clock::now();
  Variable l = bench.model->loss(batch.x, batch.y);
  bench.zero->backward(l, true);
  bench.zero->clip_grad_norm(1.0);
  bench.zero->step(3e-4);
  bench.zero->zero_grad();
  *loss = l.data().item();  // waits for the device
  if (profiled) cuda_profiler_stop();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The loss and every parameter's gradient from one batch, leaving the
// weights as they were (no step).
GradientCheck gradient_check(Bench& bench, const Batch& batch) {
  GradientCheck check;
  Variable l = bench.model->loss(batch.x, batch.y);
  bench.zero->backward(l, true);
  bench.zero->clip_grad_norm(0);  // measures only; zeroes any gradient no backward wrote
  check.loss = l.data().item();
  for (const ShardGroup& group : bench.zero->groups()) {
    const std::vector<float> flat = group.flat_grads().to(Device::cpu()).to_vector<float>();
    for (const GroupParameter& p : group.params()) {
      check.gradients.emplace_back(p.name, std::vector<float>(flat.begin() + p.offset,
                                                              flat.begin() + p.offset + p.numel));
    }
  }
  bench.zero->zero_grad();
  return check;
}

// Whether the device still runs work after a failure (a kernel that
// faulted poisons the CUDA context: every later call fails).
bool device_answers(const Bench& bench) {
  try {
    return Tensor::ones({1}, TensorOptions().device(bench.device)).item() == 1.0;
  } catch (const std::exception&) {
    return false;
  }
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

void print_json(const Bench& bench, const std::string& dtype, double seconds, double loss, const std::string& extra) {
  const double flops = bench.flops_per_step() / seconds;
  std::printf("{\"framework\": \"shardgrad\", \"device\": \"%s\", \"dtype\": \"%s\", \"parameters\": %.0f, "
              "\"batch\": %lld, \"ctx\": %lld, \"ms_per_step\": %.2f, \"tokens_per_s\": %.1f, \"tflops\": %.2f, "
              "\"mfu\": %.4f, \"loss\": %.4f%s}\n",
              bench.device.str().c_str(), dtype.c_str(), double(bench.model->parameter_count()), (long long)bench.B,
              (long long)bench.T, seconds * 1000, bench.tokens() / seconds, flops / 1e12, flops / bench.peak_flops,
              loss, extra.c_str());
}

int run_single(Bench& bench, std::map<std::string, std::string>& a) {
  const int64_t warmup = int_arg(a, "warmup"), steps = int_arg(a, "steps");
  std::vector<double> seconds;
  double loss = 0;
  for (int64_t step = 0; step < warmup + steps; ++step) {
    if (step == warmup) reset_peak_memory(bench.device);  // the timed steps' peak: what a micro-batch needs
    // --profile-last 1: only the last step under a profiler started with
    // --profile-from-start off (bench/kernel_profile.py), not the model's setup.
    const bool profiled = a["profile-last"] == "1" && step + 1 == warmup + steps;
    const Batch& batch = bench.batches[size_t(step) % bench.batches.size()];
    const double s = train_step(bench, batch, profiled, &loss);
    if (step >= warmup) seconds.push_back(s);
  }
  // Every byte our tensors held at once on the device (parameters, gradients,
  // optimizer states, activations; not the cache's free blocks), as
  // PyTorch's max_memory_allocated counts its own.
  const MemoryStats memory = memory_stats(bench.device);
  // Beside the activation peak, tools/activation_memory.h's prediction of
  // it (held to the byte by test_zero on a CPU and in the CUDA emulator):
  // a step's (whose batch it counts), plus the other batches this program
  // keeps (ids and targets, i32) and, on a GPU, the clipping factor AdamW
  // holds (an f32). None where it makes none (a CPU's
  // 16-bit path).
  std::string estimate = "null";
  const bool cuda = bench.device.is_cuda();
  if (bench.dtype == DType::f32 || cuda) {
    const ActivationOptions options{
        .batch = bench.B, .dtype = bench.dtype, .cuda = cuda, .loss_chunk_rows = bench.loss_chunk};
    const int64_t bytes = estimate_activations(bench.cfg, options).peak +
                          int64_t(bench.batches.size() - 1) * 2 * bench.B * bench.T * 4 + (cuda ? 4 : 0);
    estimate = std::to_string(bytes);
  }
  const int64_t activation_peak = memory[MemoryCategory::activation].peak;
  char extra[240];
  std::snprintf(extra, sizeof extra,
                ", \"peak_gib\": %.3f, \"activation_peak_gib\": %.3f, \"activation_peak_bytes\": %lld, "
                "\"activation_estimate_bytes\": %s",
                double(memory.total.peak) / double(1LL << 30), double(activation_peak) / double(1LL << 30),
                (long long)activation_peak, estimate.c_str());
  print_json(bench, a["dtype"], median(seconds), loss, extra);
  return 0;
}

struct VariantResult {
  std::string error;  // why it was not timed
  CheckDifference difference;
  std::vector<double> seconds;        // every timed step
  std::vector<double> round_medians;  // one a round
  double loss = 0;
};

int run_variants(Bench& bench, std::map<std::string, std::string>& a) {
  const std::vector<SwitchVariant> variants = parse_switch_variants(a["variants"]);
  const int64_t warmup = int_arg(a, "warmup"), steps = int_arg(a, "steps"), rounds = int_arg(a, "rounds");
  const double tolerance = number_arg(a, "tolerance");
  std::vector<VariantResult> results(variants.size());

  // The variants take turns, round after round. On its first turn each is
  // checked against the defaults at the weights as they stand (the
  // defaults' gradients computed just before its own), then warms up. A
  // variant that throws is dropped; if the device itself no longer answers
  // (a kernel that faulted leaves the CUDA context unusable), the turns
  // stop there and the table shows what was measured before.
  size_t next_batch = 0;
  bool device_lost = false;
  for (int64_t round = 0; round < rounds && !device_lost; ++round) {
    std::fprintf(stderr, "bench_gpt: round %lld of %lld\n", (long long)round + 1, (long long)rounds);
    for (size_t v = 0; v < variants.size() && !device_lost; ++v) {
      VariantResult& r = results[v];
      if (!r.error.empty()) continue;
      try {
        if (round == 0 && v > 0) {
          std::fprintf(stderr, "bench_gpt: checking %s (%s)\n", variants[v].name.c_str(),
                       variants[v].describe().c_str());
          const GradientCheck reference = gradient_check(bench, bench.batches[0]);
          ScopedSwitches switches(variants[v]);
          r.difference = compare_checks(reference, gradient_check(bench, bench.batches[0]));
          if (!r.difference.within(tolerance)) {
            r.error = "not timed: its loss or gradients differ from the defaults' by more than --tolerance";
            continue;
          }
        }
        ScopedSwitches switches(variants[v]);
        std::vector<double> seconds;
        for (int64_t step = 0; step < (round == 0 ? warmup : 0) + steps; ++step) {
          const Batch& batch = bench.batches[next_batch++ % bench.batches.size()];
          const double s = train_step(bench, batch, false, &r.loss);
          if (round > 0 || step >= warmup) seconds.push_back(s);
        }
        r.seconds.insert(r.seconds.end(), seconds.begin(), seconds.end());
        r.round_medians.push_back(median(seconds));
      } catch (const std::exception& error) {
        if (v == 0) throw;  // the defaults themselves: nothing to compare with
        r.error = std::string("failed: ") + error.what();
        r.seconds.clear();
        device_lost = !device_answers(bench);
        if (!device_lost) bench.zero->zero_grad();
      }
    }
  }
  if (device_lost) {
    std::fprintf(stderr, "bench_gpt: the device stopped answering after a variant failed; the rounds stop here\n");
  }

  const double base = results[0].seconds.empty() ? 0 : median(results[0].seconds);
  std::printf("| variant | switches | ms/step | rounds (ms) | speed vs default | MFU | loss vs default | "
              "worst gradient vs default |\n|---|---|---|---|---|---|---|---|\n");
  bool all_ok = true;
  for (size_t v = 0; v < variants.size(); ++v) {
    const VariantResult& r = results[v];
    const CheckDifference& d = r.difference;
    char check[256];
    std::snprintf(check, sizeof check, "%.2e | %.2e (%s)", d.loss, d.worst_gradient,
                  d.worst_gradient == 0 ? "every parameter" : d.worst_parameter.c_str());
    if (r.seconds.empty()) {
      all_ok = false;
      const std::string why = !r.error.empty() ? r.error : "not run: the device stopped answering before its turn";
      std::printf("| %s | %s | %s | | | | %s |\n", variants[v].name.c_str(), variants[v].describe().c_str(),
                  why.c_str(), why.rfind("not timed", 0) == 0 ? check : " | ");
      continue;
    }
    const double ms = median(r.seconds) * 1000;
    std::string spread;
    for (double m : r.round_medians) {
      char one[32];
      std::snprintf(one, sizeof one, "%s%.2f", spread.empty() ? "" : " ", m * 1000);
      spread += one;
    }
    std::printf("| %s | %s | %.2f | %s | %.3fx | %.1f%% | %s |\n", variants[v].name.c_str(),
                variants[v].describe().c_str(), ms, spread.c_str(), base / (ms / 1000),
                100 * bench.flops_per_step() / (ms / 1000) / bench.peak_flops, check);
  }
  for (size_t v = 0; v < variants.size(); ++v) {
    const VariantResult& r = results[v];
    if (r.seconds.empty()) continue;
    char extra[512];
    std::snprintf(extra, sizeof extra, ", \"variant\": \"%s\", \"switches\": \"%s\", \"loss_vs_default\": %.3e, "
                  "\"gradient_vs_default\": %.3e", variants[v].name.c_str(), variants[v].describe().c_str(),
                  r.difference.loss, r.difference.worst_gradient);
    print_json(bench, a["dtype"], median(r.seconds), r.loss, extra);
  }
  return all_ok ? 0 : 1;
}

int run(int argc, char** argv) {
  std::map<std::string, std::string> a = {{"device", "cuda"}, {"dtype", "bf16"}, {"layers", "12"}, {"heads", "12"},
                                          {"embd", "768"},    {"vocab", "50304"}, {"ctx", "1024"},  {"batch", "8"},
                                          {"warmup", "2"},    {"steps", "5"},     {"peak-tflops", "989"},
                                          {"profile-last", "0"}, {"variants", ""}, {"rounds", "3"},
                                          {"tolerance", "0.1"}, {"loss-chunk", "0"}};
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    SG_CHECK(flag.rfind("--", 0) == 0 && a.count(flag.substr(2)) && i + 1 < argc, "unknown flag or missing value: ",
             flag);
    a[flag.substr(2)] = argv[i + 1];
  }
  if (!a["variants"].empty()) parse_switch_variants(a["variants"]);  // a bad spec fails before the model is built
  // The loop's numbers checked here too, before the model is built.
  SG_CHECK(int_arg(a, "steps") >= 1 && int_arg(a, "rounds") >= 1 && int_arg(a, "warmup") >= 0,
           "--steps and --rounds must be at least 1, --warmup at least 0");
  (void)number_arg(a, "tolerance");
  Bench bench = make_bench(a);
  return a["variants"].empty() ? run_single(bench, a) : run_variants(bench, a);
}

}  // namespace
}  // namespace sg

int main(int argc, char** argv) {
  return sg::run_main("bench_gpt", [&] { return sg::run(argc, argv); });
}
