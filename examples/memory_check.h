// train_gpt's check before its first step: do the bytes the run is
// predicted to hold fit in the memory of the device it runs on? A run that
// cannot fit then stops with what to change, instead of failing inside its
// first step (a GPU's out-of-memory error) or being killed by the kernel's
// out-of-memory killer (the host), perhaps minutes in.
//
// Read next: tools/activation_memory.h (the activations' prediction),
// tools/zero_memory_model.h (the model states').
#pragma once

#include <cstdint>

#include "examples/train_flags.h"
#include "tensor/device.h"

namespace sg {

// What each rank of a run holds at a step's peak: its model states
// (parameters, gradients, optimizer states) and its activations.
struct RankMemoryNeed {
  int64_t states = 0, activation_peak = 0;
};

// How many of a node's `local_ranks` put their tensors on `device`: all of
// them for the CPU; for cuda:i, those whose local rank % `gpus` is i
// (dist/world.h's local_cuda_device).
int ranks_on_device(Device device, int local_ranks, int gpus);

// Throws sg::Error, saying what to change, where `sharing` ranks that each
// need `need` cannot fit in `device`'s memory. `memory` is what its driver or
// the kernel reports (free now, and in all; zeros mean unknown, and then
// nothing is checked); `held` is what each of those ranks holds already in
// shardgrad's allocator, live or cached (the parameters, by the time
// train_gpt checks), which is not free but is theirs to use.
void check_run_fits(const RankMemoryNeed& need, const TrainFlags& flags, Device device, const DeviceMemory& memory,
                    int64_t held, int sharing);

}  // namespace sg
