// Predicts the per-rank bytes of ZeRO training for a GPT, the way DeepSpeed's
// memory estimators do, but from the same group layout shardgrad uses
// (one group per unit and weight-decay class, each padded to a multiple of
// ranks x 16 elements), so the prediction can be held to the allocator's
// measurement (tests/dist/test_zero.cpp).
//
// Per-parameter bytes (P = padded elements, N = ranks):
//   f32 (what shardgrad trains in):  parameters 4, gradients 4, AdamW moments 8
//   bf16 mixed precision (K = 12):   parameters 2, gradients 4 (accumulated in f32), fp32 master + moments 12
// split as the stage dictates:
//   stage 0:  params P     grads P              optimizer P
//   stage 1:  params P     grads P + P/N        optimizer P/N
//   stage 2:  params P     grads P/N            optimizer P/N
//   stage 3:  params P/N   grads P/N            optimizer P/N, plus gather buffers: the token
//             embedding (kept through forward for the tied head), a block's two groups and one prefetched
#pragma once

#include <cstdint>
#include <string>

#include "nn/gpt.h"
#include "tools/activation_memory.h"

namespace sg {

struct ZeroMemoryEstimate {
  int64_t parameter_elements = 0;  // Psi, unpadded
  int64_t padded_elements = 0;     // P: what the groups hold
  int64_t largest_group = 0;       // padded elements of the biggest group (a stage-3 gather buffer)
  int64_t parameters = 0, gradients = 0, optimizer_states = 0, gather_buffers = 0;  // bytes per rank
  int64_t total() const { return parameters + gradients + optimizer_states + gather_buffers; }
};

// dtype: f32 or bf16 (mixed precision with fp32 master weights). Throws
// for a model whose states would take more than an exabyte
// (zero_memory_countable says which).
ZeroMemoryEstimate estimate_zero_memory(const GptConfig& cfg, int ranks, int stage, DType dtype = DType::f32);
bool zero_memory_countable(const GptConfig& cfg);

// The most layers of width cfg.n_embd whose estimate fits in `bytes_per_rank`
// (0 if not even one does); with `activations`, their step's peak counts too.
int64_t max_layers_that_fit(GptConfig cfg, int ranks, int stage, DType dtype, int64_t bytes_per_rank,
                            const ActivationOptions* activations = nullptr);

// The largest micro-batch (activations.batch ignored) whose model states and
// activation peak fit in `bytes_per_rank` (0 if not even one sequence does).
int64_t max_batch_that_fits(const GptConfig& cfg, int ranks, int stage, DType dtype, ActivationOptions activations,
                            int64_t bytes_per_rank);

}  // namespace sg
