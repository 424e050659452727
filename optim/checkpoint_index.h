// A checkpoint's index.json: what every rank file holds, and the training
// state. Written last, by rank 0, once every rank's file is on disk, so a
// checkpoint directory with an index is complete, and one without is not.
//
//   {"format": "shardgrad-checkpoint", "version": 1,
//    "world_size": 2, "zero_stage": 3, "optimizer": {"type": "AdamW", "steps": 100,
//                                                     "parameter_steps": {"side.weight": 61}},  (where not "steps")
//    "loss_scaler": {"scale": 32768, "iteration": 100, "last_overflow": 61, "hysteresis_left": 2},  (fp16 only)
//    "tensors": {
//      "h.0.attn.c_attn.weight": {"dtype": "F32", "shape": [384, 128],
//         "shards": [{"file": "rank-0-of-2.safetensors", "begin": 0, "end": 49152}, ...]},
//      "h.0.attn.c_attn.weight.exp_avg": {...}, "h.0.attn.c_attn.weight.exp_avg_sq": {...}, ...},
//    "training": {...}}                 (the caller's: step, data loader, config)
//
// A shard is a range [begin, end) of the tensor's flattened elements, stored
// in `file` as a 1-D tensor under the tensor's own name. Together a tensor's
// shards cover it exactly once, so any rank of any world size can find
// whatever range it needs: that is all re-sharding takes.
//
// Read next: optim/checkpoint.cpp.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "optim/loss_scaler.h"
#include "tensor/layout.h"

namespace sg {

struct CheckpointShard {
  std::string file;  // a plain file name in the checkpoint's directory
  int64_t begin = 0, end = 0;
};

struct CheckpointTensor {
  DType dtype = DType::f32;
  Shape shape;
  std::vector<CheckpointShard> shards;  // sorted by begin, covering [0, numel) exactly
  int64_t numel() const;
};

struct CheckpointIndex {
  static constexpr int kVersion = 1;
  int version = kVersion;
  int world_size = 1, zero_stage = 0;
  int64_t optimizer_steps = 0;
  // Each parameter's own count of AdamW steps (its bias correction), for the
  // parameters whose count is not optimizer_steps (one that got no gradient
  // in some steps).
  std::map<std::string, int64_t> parameter_steps;
  bool has_loss_scaler = false;  // fp16 training: the scaler's state
  LossScaler::State loss_scaler;
  std::map<std::string, CheckpointTensor> tensors;
  std::string training = "{}";  // a JSON object, the caller's

  std::string to_json() const;
};

// Parses and checks an index (types, ranges, coverage, file names, version);
// `origin` names it in errors.
CheckpointIndex parse_checkpoint_index(std::string_view text, const std::string& origin);

}  // namespace sg
