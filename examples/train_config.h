// A DeepSpeed-shaped JSON config for train_gpt (--config FILE), so people can
// bring the config they know. Flags given on the command line override it.
//
//   {
//     "train_batch_size": 32,                 // = micro batch x accumulation x ranks (given two, the third follows)
//     "train_micro_batch_size_per_gpu": 16,   // --batch
//     "gradient_accumulation_steps": 1,       // --grad-accum
//     "gradient_clipping": 1.0,               // --clip
//     "zero_optimization": {"stage": 2, "overlap_comm": true,
//                           "reduce_bucket_size": 5e8, "allgather_bucket_size": 5e8},
//     "optimizer": {"type": "AdamW", "params": {"lr": 2e-3, "betas": [0.9, 0.99], "eps": 1e-8, "weight_decay": 0.1}},
//     "scheduler": {"type": "WarmupCosineLR",  // or WarmupLR, WarmupDecayLR: DeepSpeed's formulas and defaults
//                   "params": {"total_num_steps": 2000, "warmup_num_steps": 100, "cos_min_ratio": 0.1,
//                              "warmup_type": "linear"}},  // DeepSpeed's default: log
//     "bf16": {"enabled": false},             // --dtype bf16 (f32 masters and moments)
//     "fp16": {"enabled": false, "initial_scale_power": 16, "loss_scale_window": 1000,
//              "hysteresis": 2, "min_loss_scale": 1},
//     "communication_data_type": "fp32",      // --reduce-dtype
//     "activation_checkpointing": {}          // --checkpoint-activations 1 (its options: false, null)
//   }
//
// Every key is checked: an unknown one is an error naming it (with its path),
// as is a value of the wrong type. What shardgrad cannot do yet is an error
// too (other optimizers, an unknown dtype, offloading), never silently
// ignored; DeepSpeed's keys that give the same run here whatever their value
// (sub_group_size, stage3_max_live_parameters, reduce_scatter: false, ...)
// are accepted and noted (TrainFlags::config_notes, printed at the start).
// "auto", which Hugging Face's Trainer fills in from its own arguments,
// leaves a flag as the command line or its default has it, so the configs
// of its DeepSpeed integration read as they are. The
// zero_optimization sizes count elements, as DeepSpeed's do; they default to
// shardgrad's own unit, one shard group (a block's weights, or its biases and
// norms) per collective, rather than DeepSpeed's 5e8 (optim/zero.h).
#pragma once

#include <string>

#include "examples/train_flags.h"

namespace sg {

// Applies the config at `path` to `flags` (before the command line is).
void apply_train_config(const std::string& path, TrainFlags& flags);

// The same, from JSON text (`origin` names it in errors).
void apply_train_config_text(const std::string& text, const std::string& origin, TrainFlags& flags);

}  // namespace sg
