// train_gpt's command line: every flag, its default and its meaning in one
// table (train_flags.cpp), so --help and the parser cannot drift apart.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "optim/loss_scaler.h"

namespace sg {

struct TrainFlags {
  std::string data;             // text file; default: the bundled tiny Shakespeare
  std::string tokenizer = "char";
  int64_t layers = 4, heads = 4, embd = 128, ctx = 128;
  int64_t batch = 16, grad_accum = 1, steps = 2000;
  double lr = 2e-3, min_lr = 2e-4, weight_decay = 0.1, beta2 = 0.99, clip = 1.0;
  int64_t warmup = 100;
  int64_t seed = 1337;
  int64_t zero = 0;             // ZeRO stage (0-3) across the ranks of mpirun
  int64_t eval_every = 250, eval_batches = 20, print_every = 50;
  std::string metrics;          // JSON lines, one per step; empty: none
  std::string out = "runs/gpt"; // the run's files (the tokenizer)
  int64_t sample = 400;         // characters to generate at the end; 0: none
  double temperature = 0.8;
  int64_t top_k = 40;
  int threads = 0;              // 0: all cores
  std::string config;           // a DeepSpeed-shaped JSON file (examples/train_config.h)
  std::string save;             // checkpoints go under this directory (step-00000500/...); empty: none
  int64_t save_every = 0;       // also every N steps (0: only at the end, or when interrupted)
  int64_t keep = 3;             // complete checkpoints kept under --save
  std::string resume;           // a checkpoint, or a --save directory (its newest)
  std::string export_path;      // a consolidated GPT-2-style safetensors file written at the end
  std::string init_from;        // start from such a file's weights
  int64_t train_batch_size = 0; // from the config: batch x grad_accum x ranks (0: not given)
  bool batch_given = false, grad_accum_given = false;  // by the config or a flag: resolve_batch_sizes derives the other
  // The config's scheduler, DeepSpeed's (optim/schedule.h): empty for the
  // flags' own warmup and cosine (nanoGPT's). --lr is WarmupCosineLR's peak,
  // and WarmupLR's and WarmupDecayLR's when warmup_max_lr is "auto".
  std::string ds_schedule;          // "", WarmupLR, WarmupDecayLR or WarmupCosineLR
  bool ds_log_warmup = true;        // warmup_type: log (DeepSpeed's default) or linear
  double ds_warmup_min_lr = 0.0;    // WarmupLR, WarmupDecayLR
  double ds_warmup_max_lr = -1.0;   // WarmupLR, WarmupDecayLR (-1: --lr)
  double ds_warmup_min_ratio = 0.0, ds_cos_min_ratio = 1e-4;  // WarmupCosineLR
  // From the config's zero_optimization (elements; optim/zero.h): 0 = one group per collective.
  int64_t reduce_bucket = 0, allgather_bucket = 0, prefetch_bucket = 0, persistence_threshold = 0;
  bool overlap_comm = true;
  int64_t checkpoint_activations = 0;  // 1: each block runs again in backward (autograd/checkpoint.h)
  int64_t loss_chunk = 0;              // tokens per chunk of the LM head and loss (autograd/chunked_loss.cpp); 0: all
  std::string device = "cpu";   // cpu or cuda (each rank its GPU: local rank % GPUs)
  std::string dtype = "f32";    // f32, bf16 or fp16 (mixed precision: f32 masters; optim/zero.h)
  std::string reduce_dtype;     // gradients reduced in: f32, bf16 or fp16 (empty: the dtype's)
  LossScalerOptions loss_scaling;  // fp16 (the config's fp16.* keys)
  std::vector<std::string> config_notes;  // the config's keys that change nothing here, and why (printed)
  bool help = false;
};

// Parses argv: first the --config file if one is named, then every other
// flag, which overrides it. Throws sg::Error naming a bad flag or value.
// --help prints the table and sets help.
TrainFlags parse_train_flags(int argc, char** argv);

// DeepSpeed's rule for the config's three batch sizes, once the number of
// ranks is known: train_batch_size = micro-batch x accumulation x ranks;
// given two, the third follows (it must divide evenly); given
// train_batch_size alone, the accumulation is 1; all three must agree.
// Throws, naming the keys, when they cannot.
void resolve_batch_sizes(TrainFlags& flags, int ranks);

}  // namespace sg
