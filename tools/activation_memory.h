// Predicts the activation bytes of one GPT training step (a micro-batch's
// forward and backward on one rank), term by term from what each autograd
// node keeps (autograd/functions.cpp), so that the prediction is held to the
// allocator's `activation` counter exactly (tests/dist/test_zero_activations.cpp)
// and zero_memory can say which micro-batch fits.
//
// Shapes: B sequences of T tokens, M = B T rows, C channels, NH heads, V
// the vocabulary, s the bytes of the dtype the model computes in (4, or 2
// for bf16/f16), statistics (LayerNorm's mean and rstd, log-sum-exps) in f32.
//
// What a block keeps for backward (ResidualSum: each residual add is done
// by the LayerNorm after it, which keeps the sum as its input):
//   ln_1's sum and output, qkv (3C), attention's output, ln_2's sum and
//   output, the MLP's h and gelu(h) (4C each):            16 M C s
//   two LayerNorms' mean and rstd:                        4 M x 4
//   attention: the probabilities (naive form, f32; GEMM form, s) B NH T^2,
//   or only each row's log-sum-exp (fused form, f32)      B NH T x 4
// The head keeps ln_f's sum and output (2 M C s) and statistics (2 M x 4),
// the logits (M V s; on CUDA the loss's forward turns them into their
// gradient in place) and, without that fusion, each row's log-sum-exp. With
// activation checkpointing a block keeps only its two inputs (2 M C s) and
// runs again in backward.
//
// The peak is the larger of two moments: the head's backward (everything
// kept, plus dx of the LM head: M C s; 3 M C s on CUDA, where the loss's
// 1/n is applied to dx and to x before dW), and the last block's MLP
// backward (the head's tensors gone; the MLP's dy, its 4C-wide da and dh
// and dx: 9 M C s more; with checkpointing the block's own tensors and
// output again on top). From ZeRO stage 2 on, parameter gradients are
// temporaries until reduced: the tied embedding's (V C s, pending until
// the token embedding adds to it) and the block's MLP weights' add to both.
#pragma once

#include <cstdint>
#include <string>

#include "nn/gpt.h"

namespace sg {

struct ActivationOptions {
  int64_t batch = 1;          // micro-batch per rank (sequences of cfg.block_size tokens)
  DType dtype = DType::f32;   // what the model computes in: f32; bf16 or f16 on CUDA only
  bool cuda = false;          // CUDA's forms: fused attention and loss (its defaults)
  bool checkpointed = false;  // Gpt::checkpoint_activations
  int stage = 0;              // ZeRO stage: from 2 on, parameter gradients are temporaries
  int64_t loss_chunk_rows = 0;  // Gpt::loss_chunk_rows (autograd/chunked_loss.cpp); 0: the whole head
};

struct ActivationEstimate {
  std::string attention;  // the form attention() takes at this shape, which sets its share
  int64_t per_block = 0;  // bytes a block keeps for backward (checkpointed: its two inputs)
  int64_t head = 0;       // ln_f's, the logits' and the loss's
  int64_t inputs = 0;     // the batch's ids and targets and the model's cached positions (i32)
  int64_t kept = 0;       // live when the forward returns: inputs + layers x per_block + head
  int64_t peak = 0;       // the most live at once in the step
};

// Throws for a shape whose bytes would not fit a count (past an exabyte):
// activation_bytes_countable says which those are.
ActivationEstimate estimate_activations(const GptConfig& cfg, const ActivationOptions& options);
bool activation_bytes_countable(const GptConfig& cfg, const ActivationOptions& options);

// Beyond this many bytes (2^60, an exabyte) the estimators refuse to count.
constexpr double kMostBytesCounted = 1152921504606846976.0;

}  // namespace sg
