// Checkpoints: a directory per save, holding one safetensors file per rank
// (that rank's slices of every parameter and AdamW moment) and index.json
// (optim/checkpoint_index.h), written last.
//
//   runs/gpt/checkpoints/step-00000500/
//     rank-0-of-2.safetensors   rank-1-of-2.safetensors   index.json
//
// ZeroOptimizer::save_checkpoint / load_checkpoint (optim/zero.h) write and
// read one; the functions here find and prune them under a --save root.
// Every file is written under a temporary name, fsynced and renamed, and the
// index only once every rank's file is in place, so a process killed at any
// moment leaves the previous checkpoint complete and loadable.
//
// Read next: docs/checkpoints.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sg {

// The caller's "training" object of a complete checkpoint (what
// save_checkpoint was given), read before any tensor is.
std::string checkpoint_training_state(const std::string& dir);

// root/step-00000500
std::string checkpoint_path(const std::string& root, int64_t step);
// `path` itself when it is a checkpoint (has index.json), else the newest
// complete checkpoint under it; an error naming what was looked for if none.
std::string find_checkpoint(const std::string& path);
// The complete checkpoints under root, oldest first.
std::vector<std::string> complete_checkpoints(const std::string& root);
// Keeps the newest `keep` complete checkpoints under root; removes older ones
// and any incomplete save older than the newest complete one.
void prune_checkpoints(const std::string& root, int64_t keep);

}  // namespace sg
