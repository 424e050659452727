#include "examples/train_flags.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <vector>

#include "examples/cli.h"
#include "examples/train_config.h"
#include "kernels/error.h"

#ifndef SG_SOURCE_DIR
#define SG_SOURCE_DIR "."
#endif

namespace sg {
namespace {

struct Flag {
  const char* name;
  const char* help;
  std::function<void(const std::string&)> set;
  std::function<std::string()> show;
};

std::vector<Flag> flag_table(TrainFlags& f) {
  auto integer = [](const char* name, const char* help, int64_t& target) {
    return Flag{name, help, [name, &target](const std::string& v) { target = parse_int_flag(name, v); },
                [&target] { return std::to_string(target); }};
  };
  auto number = [](const char* name, const char* help, double& target) {
    return Flag{name, help, [name, &target](const std::string& v) { target = parse_number_flag(name, v); },
                [&target] { char text[32]; std::snprintf(text, sizeof(text), "%g", target); return std::string(text); }};
  };
  auto text = [](const char* name, const char* help, std::string& target) {
    return Flag{name, help, [&target](const std::string& v) { target = v; }, [&target] { return target; }};
  };
  return {
      text("data", "text file to train on", f.data),
      text("tokenizer", "char (vocabulary from the text) or byte (256)", f.tokenizer),
      integer("layers", "transformer blocks", f.layers),
      integer("heads", "attention heads per block", f.heads),
      integer("embd", "channels (divisible by --heads)", f.embd),
      integer("ctx", "context length T", f.ctx),
      integer("batch", "sequences per micro-batch B", f.batch),
      integer("grad-accum", "micro-batches per optimizer step", f.grad_accum),
      integer("checkpoint-activations", "1: keep only the blocks' inputs, run each block again in backward",
              f.checkpoint_activations),
      integer("loss-chunk", "tokens per chunk of the LM head and loss (0: all at once; the logits never all in "
              "memory otherwise)", f.loss_chunk),
      integer("steps", "optimizer steps", f.steps),
      number("lr", "peak learning rate (after warmup)", f.lr),
      number("min-lr", "learning rate at the end of the cosine decay", f.min_lr),
      integer("warmup", "linear warmup steps", f.warmup),
      number("weight-decay", "AdamW decay of the linear-layer weights", f.weight_decay),
      number("beta2", "AdamW beta2", f.beta2),
      number("clip", "global gradient-norm clip (0: off)", f.clip),
      integer("seed", "initialization, data order and sampling", f.seed),
      integer("zero", "ZeRO stage 0-3 (data-parallel ranks under mpirun)", f.zero),
      text("device", "cpu or cuda (each rank uses GPU local-rank % GPUs)", f.device),
      text("dtype", "f32, bf16 or fp16 (mixed precision: f32 master weights and moments)", f.dtype),
      text("reduce-dtype", "reduce gradients in f32, bf16 or fp16 (default: as --dtype)", f.reduce_dtype),
      integer("eval-every", "validate every N steps (and always at the last)", f.eval_every),
      integer("eval-batches", "validation batches per evaluation", f.eval_batches),
      integer("print-every", "progress line every N steps when not on a terminal", f.print_every),
      text("metrics", "write one JSON object per step to this file", f.metrics),
      text("out", "directory for the run's files", f.out),
      integer("sample", "characters to generate at the end (0: none)", f.sample),
      number("temperature", "sampling temperature", f.temperature),
      integer("top-k", "sample among the k likeliest tokens (0: all)", f.top_k),
      text("config", "a DeepSpeed-shaped JSON config; flags given here override it", f.config),
      text("save", "write checkpoints under this directory (at the end, every --save-every steps, on SIGINT/SIGTERM)", f.save),
      integer("save-every", "also checkpoint every N steps (0: only at the end)", f.save_every),
      integer("keep", "complete checkpoints to keep under --save", f.keep),
      text("resume", "continue from a checkpoint (or the newest under a --save directory)", f.resume),
      text("export", "write the trained model to this GPT-2-style .safetensors file", f.export_path),
      text("init-from", "start from the weights of a GPT-2-style .safetensors file", f.init_from),
      Flag{"threads", "CPU threads (0: all cores, shared among the ranks on a node)", [&f](const std::string& v) { f.threads = parse_int32_flag("threads", v); },
           [&f] { return std::to_string(f.threads); }},
  };
}

std::string default_data_path() {
  const char* bundled = "data/tinyshakespeare.txt";
  if (std::filesystem::exists(bundled)) return bundled;
  return std::string(SG_SOURCE_DIR) + "/" + bundled;
}

// Each check names the flag and the value it got, so that a value that came
// from a --config file is recognisable too.
void check_ranges(const TrainFlags& f) {
  auto positive = [](const char* flag, int64_t value, const char* config_key = nullptr) {
    SG_CHECK(value > 0, "--", flag, config_key ? std::string(" (") + config_key + ")" : "", " must be at least 1, got ",
             value);
  };
  positive("layers", f.layers), positive("heads", f.heads), positive("embd", f.embd), positive("ctx", f.ctx);
  SG_CHECK(f.embd % f.heads == 0, "--embd ", f.embd, " must be divisible by --heads ", f.heads);
  positive("batch", f.batch, "train_micro_batch_size_per_gpu");
  positive("grad-accum", f.grad_accum, "gradient_accumulation_steps");
  positive("steps", f.steps, "scheduler.params.total_num_steps");
  SG_CHECK(f.lr > 0 && f.min_lr >= 0 && f.min_lr <= f.lr, "need 0 <= --min-lr <= --lr and --lr > 0 (got --min-lr ",
           f.min_lr, ", --lr ", f.lr, ")");
  SG_CHECK(f.ds_schedule.empty() || f.warmup > 0, "--warmup (scheduler.params.warmup_num_steps) ", f.warmup,
           ": DeepSpeed's ", f.ds_schedule, " needs at least 1 warmup step");
  SG_CHECK(f.warmup >= 0 && f.warmup < f.steps, "--warmup (scheduler.params.warmup_num_steps) ", f.warmup,
           " must be in [0, --steps ", f.steps,
           "): the learning rate warms up, then decays over the steps left");
  // (A --config sets these too; its keys are named beside the flags.)
  SG_CHECK(std::isfinite(f.lr), "--lr (optimizer.params.lr) ", f.lr, ": give a finite learning rate");
  SG_CHECK(f.beta2 >= 0 && f.beta2 < 1, "--beta2 (optimizer.params.betas[1]) ", f.beta2,
           " must be in [0, 1) (GPT training often uses 0.95-0.99)");
  SG_CHECK(f.weight_decay >= 0 && std::isfinite(f.weight_decay), "--weight-decay (optimizer.params.weight_decay) ",
           f.weight_decay, " must be >= 0");
  SG_CHECK(f.clip >= 0 && std::isfinite(f.clip), "--clip (gradient_clipping) ", f.clip,
           " must be >= 0 (0 turns clipping off)");
  positive("eval-batches", f.eval_batches), positive("print-every", f.print_every, "steps_per_print");
  SG_CHECK(f.eval_every >= 0, "--eval-every must be >= 0 (0: only at the last step), got ", f.eval_every);
  SG_CHECK(f.sample >= 0, "--sample must be >= 0 (0: no sample), got ", f.sample);
  SG_CHECK(f.top_k >= 0, "--top-k must be >= 0 (0: all tokens), got ", f.top_k);
  SG_CHECK(f.temperature > 0 && std::isfinite(f.temperature), "--temperature must be a finite number above 0, got ",
           f.temperature);
  SG_CHECK(f.threads >= 0, "--threads must be >= 0 (0: all cores), got ", f.threads);
  SG_CHECK(f.zero >= 0 && f.zero <= 3, "--zero (zero_optimization.stage) ", f.zero, ": ZeRO stages are 0, 1, 2 and 3");
  SG_CHECK(f.save_every >= 0, "--save-every must be >= 0 (0: only at the end), got ", f.save_every);
  SG_CHECK(f.checkpoint_activations == 0 || f.checkpoint_activations == 1, "--checkpoint-activations is 0 or 1, got ",
           f.checkpoint_activations);
  SG_CHECK(f.loss_chunk >= 0, "--loss-chunk must be >= 0 (0: the whole micro-batch at once), got ", f.loss_chunk);
  positive("keep", f.keep);
  SG_CHECK(f.dtype == "f32" || f.dtype == "bf16" || f.dtype == "fp16", "--dtype ", f.dtype, ": use f32, bf16 or fp16");
  SG_CHECK(f.device == "cpu" || f.device == "cuda", "--device ", f.device, ": use cpu or cuda");
  SG_CHECK(f.reduce_dtype.empty() || f.reduce_dtype == "f32" || f.reduce_dtype == f.dtype, "--reduce-dtype ",
           f.reduce_dtype, ": gradients are reduced in f32 or in --dtype (", f.dtype, ")");
  SG_CHECK(f.save_every == 0 || !f.save.empty(), "--save-every needs --save DIR (where to write the checkpoints)");
  SG_CHECK(f.resume.empty() || f.init_from.empty(), "--resume and --init-from both set the weights; give one");
}

}  // namespace

TrainFlags parse_train_flags(int argc, char** argv) {
  TrainFlags flags;
  std::vector<Flag> table = flag_table(flags);
  // The config first, so that every flag on the command line overrides it.
  for (int i = 1; i + 1 < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--config") apply_train_config(argv[i + 1], flags);
    if (arg.rfind("--config=", 0) == 0) apply_train_config(arg.substr(9), flags);
  }
  bool min_lr_given = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::printf("usage: %s [flags]\n", argv[0]);
      for (const Flag& flag : table) {
        std::printf("  --%-14s %s (default: %s)\n", flag.name, flag.help, flag.show().empty() ? "none" : flag.show().c_str());
      }
      flags.help = true;
      return flags;
    }
    SG_CHECK(arg.rfind("--", 0) == 0, "unexpected argument '", arg, "'; flags look like --steps 100 (see --help)");
    std::string name = arg.substr(2), value;
    size_t equals = name.find('=');
    if (equals != std::string::npos) {
      value = name.substr(equals + 1);
      name = name.substr(0, equals);
    } else {
      SG_CHECK(i + 1 < argc, "--", name, " needs a value");
      value = argv[++i];
    }
    bool known = false;
    for (const Flag& flag : table) {
      if (name == flag.name) {
        flag.set(value);
        known = true;
      }
    }
    SG_CHECK(known, "unknown flag --", name, " (see --help)");
    min_lr_given |= name == "min-lr";
    flags.batch_given |= name == "batch";
    flags.grad_accum_given |= name == "grad-accum";
  }
  SG_CHECK(flags.ds_schedule.empty() || !min_lr_given, "--min-lr is the floor of train_gpt's own schedule; the ",
           "config's scheduler (", flags.ds_schedule, ") sets its own (DeepSpeed's params: warmup_min_lr, ",
           "cos_min_ratio)");
  if (flags.data.empty()) flags.data = default_data_path();
  check_ranges(flags);
  return flags;
}

void resolve_batch_sizes(TrainFlags& f, int ranks) {
  const int64_t total = f.train_batch_size, W = ranks;
  if (total == 0) return;
  SG_CHECK(total > 0, "train_batch_size ", total, " in the config must be at least 1");
  auto share = [&](int64_t per, const char* derived, const char* from) {
    SG_CHECK(total % (per * W) == 0, "train_batch_size ", total, " in the config is not a multiple of ", from, " (",
             per, ") x ranks (", W, "), so ", derived, " cannot follow from it; fix one of them");
    return total / (per * W);
  };
  if (f.batch_given && !f.grad_accum_given) {
    f.grad_accum = share(f.batch, "gradient_accumulation_steps", "train_micro_batch_size_per_gpu (--batch)");
  } else if (f.grad_accum_given && !f.batch_given) {
    f.batch = share(f.grad_accum, "train_micro_batch_size_per_gpu", "gradient_accumulation_steps (--grad-accum)");
  } else if (!f.batch_given && !f.grad_accum_given) {
    f.grad_accum = 1;
    f.batch = share(1, "train_micro_batch_size_per_gpu", "gradient_accumulation_steps (1)");
  }
  SG_CHECK(total == f.batch * f.grad_accum * W, "train_batch_size ", total,
           " in the config is not train_micro_batch_size_per_gpu (", f.batch, ") x gradient_accumulation_steps (",
           f.grad_accum, ") x ranks (", W, ") = ", f.batch * f.grad_accum * W, "; fix one of them");
}

}  // namespace sg
