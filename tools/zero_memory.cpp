// zero_memory: predicts the per-rank bytes of training a GPT with ZeRO, and
// how many layers fit in a given memory per rank.
//
//   build/bin/zero_memory --layers 12 --embd 768 --heads 12 --vocab 50304 --ctx 1024 --ranks 8 --stage 2 --dtype bf16
//   build/bin/zero_memory ... --memory-gb 80      # also: the most layers that fit in 80 GB per rank
//   build/bin/zero_memory ... --batch 8 [--checkpoint-activations 1] [--loss-chunk N] [--device cuda|cpu]
//                                                # and a micro-batch's activations (tools/activation_memory.h):
//                                                # with --memory-gb, the largest micro-batch that fits
//
// Without --batch, model states only (parameters, gradients, optimizer
// states, stage 3's gather buffers).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

#include "examples/cli.h"
#include "tools/zero_memory_model.h"

namespace {

double gib(int64_t bytes) { return double(bytes) / double(1LL << 30); }

}  // namespace

int main(int argc, char** argv) {
  try {
    sg::GptConfig cfg;
    cfg.n_layer = 12, cfg.n_embd = 768, cfg.n_head = 12, cfg.vocab_size = 50304, cfg.block_size = 1024;
    int ranks = 1, stage = 0;
    std::string dtype = "f32";
    double memory_gb = 0;
    int64_t batch = 0, checkpointed = 0, loss_chunk = 0;
    std::string device = "cuda";
    for (int i = 1; i < argc; ++i) {
      std::string flag = argv[i];
      if (flag == "--help") {
        std::printf("usage: %s [--layers N] [--embd C] [--heads NH] [--vocab V] [--ctx T] [--ranks N] [--stage 0-3] "
                    "[--dtype f32|bf16|fp16] [--memory-gb G] [--batch B] [--checkpoint-activations 0|1] [--loss-chunk N] "
                    "[--device cuda|cpu]\n",
                    argv[0]);
        return 0;
      }
      SG_CHECK(i + 1 < argc, flag, " needs a value (see --help)");
      std::string value = argv[++i];
      const std::string name = flag.substr(flag.rfind("--", 0) == 0 ? 2 : 0);
      if (flag == "--layers") cfg.n_layer = sg::parse_int_flag(name, value);
      else if (flag == "--embd") cfg.n_embd = sg::parse_int_flag(name, value);
      else if (flag == "--heads") cfg.n_head = sg::parse_int_flag(name, value);
      else if (flag == "--vocab") cfg.vocab_size = sg::parse_int_flag(name, value);
      else if (flag == "--ctx") cfg.block_size = sg::parse_int_flag(name, value);
      else if (flag == "--ranks") ranks = sg::parse_int32_flag(name, value);
      else if (flag == "--stage") stage = sg::parse_int32_flag(name, value);
      else if (flag == "--dtype") dtype = value;
      else if (flag == "--memory-gb") memory_gb = sg::parse_number_flag(name, value);
      else if (flag == "--batch") batch = sg::parse_int_flag(name, value);
      else if (flag == "--checkpoint-activations") checkpointed = sg::parse_int_flag(name, value);
      else if (flag == "--loss-chunk") loss_chunk = sg::parse_int_flag(name, value);
      else if (flag == "--device") device = value;
      else SG_FAIL("unknown flag ", flag, " (see --help)");
    }
    SG_CHECK(dtype == "f32" || dtype == "bf16" || dtype == "fp16", "--dtype must be f32, bf16 or fp16, got ", dtype);
    SG_CHECK(memory_gb >= 0 && memory_gb <= 1e9, "--memory-gb must be a number of GiB up to 1e9 (0: skip), got ",
             memory_gb);
    SG_CHECK(batch >= 0, "--batch must be a number of sequences (0: model states only), got ", batch);
    SG_CHECK(checkpointed == 0 || checkpointed == 1, "--checkpoint-activations is 0 or 1, got ", checkpointed);
    SG_CHECK(loss_chunk >= 0, "--loss-chunk must be >= 0 tokens (0: the whole micro-batch at once), got ", loss_chunk);
    SG_CHECK(device == "cuda" || device == "cpu", "--device must be cuda or cpu, got ", device);
    SG_CHECK(!(batch > 0 && device == "cpu" && dtype != "f32"), "--batch with a 16-bit --dtype needs --device cuda: ",
             "a CPU's bf16 kernels compute through f32 copies (a testing path), whose activations are not estimated");
    // fp16's model states take bf16's bytes (the loss scaler's are a few scalars).
    sg::DType type = dtype == "f32" ? sg::DType::f32 : sg::DType::bf16;
    const sg::ActivationOptions activations{
        .batch = std::max<int64_t>(batch, 1), .dtype = type, .cuda = device == "cuda", .checkpointed = checkpointed == 1,
        .stage = stage, .loss_chunk_rows = loss_chunk};
    sg::ZeroMemoryEstimate e = sg::estimate_zero_memory(cfg, ranks, stage, type);
    std::optional<sg::ActivationEstimate> a;  // both estimates before any line is printed
    if (batch > 0) a = sg::estimate_activations(cfg, activations);
    std::printf("GPT: %lld layers, %lld channels, %lld heads, vocab %lld, context %lld: %lld parameters (%lld padded)\n",
                (long long)cfg.n_layer, (long long)cfg.n_embd, (long long)cfg.n_head, (long long)cfg.vocab_size,
                (long long)cfg.block_size, (long long)e.parameter_elements, (long long)e.padded_elements);
    std::printf("ZeRO stage %d on %d rank(s), %s: per rank\n", stage, ranks, dtype.c_str());
    std::printf("  parameters        %10.3f GiB\n", gib(e.parameters));
    std::printf("  gradients         %10.3f GiB\n", gib(e.gradients));
    std::printf("  optimizer states  %10.3f GiB\n", gib(e.optimizer_states));
    std::printf("  gather buffers    %10.3f GiB\n", gib(e.gather_buffers));
    if (batch == 0) {
      std::printf("  total             %10.3f GiB (model states; --batch B adds a micro-batch's activations)\n",
                  gib(e.total()));
    } else {
      std::printf("activations of a micro-batch of %lld x %lld tokens on %s%s%s (attention: %s):\n",
                  (long long)batch, (long long)cfg.block_size, device.c_str(), checkpointed ? ", blocks checkpointed" : "",
                  loss_chunk > 0 ? ", the loss in chunks" : "", a->attention.c_str());
      std::printf("  kept for backward %10.3f GiB (%.3f GiB a block, %.3f GiB the head and loss)\n", gib(a->kept),
                  gib(a->per_block), gib(a->head));
      std::printf("  peak in a step    %10.3f GiB\n", gib(a->peak));
      std::printf("  total             %10.3f GiB (model states and the activation peak)\n", gib(e.total() + a->peak));
    }
    if (memory_gb > 0) {
      const int64_t bytes = int64_t(memory_gb * double(1LL << 30));
      int64_t layers = sg::max_layers_that_fit(cfg, ranks, stage, type, bytes, batch > 0 ? &activations : nullptr);
      std::printf("in %.1f GiB per rank: up to %lld layers of %lld channels%s\n", memory_gb, (long long)layers,
                  (long long)cfg.n_embd, batch > 0 ? " at this micro-batch" : "");
      if (batch > 0) {
        std::printf("in %.1f GiB per rank: a micro-batch of up to %lld sequences at %lld layers\n", memory_gb,
                    (long long)sg::max_batch_that_fits(cfg, ranks, stage, type, activations, bytes),
                    (long long)cfg.n_layer);
      }
    }
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "zero_memory: %s\n", error.what());
    return 1;
  }
}
