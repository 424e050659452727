// The differentiable ops: each records a Node whose backward rule is written
// right beside its forward (functions.cpp), on top of the raw ops of
// tensor/ops.h. This is the whole vocabulary a GPT needs.
//
// Shapes: B batch, T time, C channels, NH heads, V vocabulary.
//
// Read next: autograd/engine.cpp (how backward visits these), nn/module.h.
#pragma once

#include <cstdint>
#include <utility>

#include "autograd/variable.h"

namespace sg {

Variable add(const Variable& a, const Variable& b);   // same shapes
Variable mul(const Variable& a, const Variable& b);   // same shapes
Variable scale(const Variable& x, double factor);
Variable reshape(const Variable& x, const Shape& shape);

// (.., M, K) @ (K, N), or batched (B.., M, K) @ (B.., K, N).
Variable matmul(const Variable& a, const Variable& b);

// y = x W^T + b, PyTorch's nn.Linear: x (.., in), weight (out, in), bias (out)
// or an undefined Variable for none.
Variable linear(const Variable& x, const Variable& weight, const Variable& bias);

// gelu(linear(x, weight, bias)) with the bias and GELU fused (bias required).
Variable linear_gelu(const Variable& x, const Variable& weight, const Variable& bias);
// linear(linear_gelu(x, fc_weight, fc_bias), proj_weight, proj_bias) as one
// node (a transformer's MLP; biases required): on CUDA its GELU can then
// run inside both GEMMs' epilogues (SG_GEMM_GELU_EPILOGUE=1).
Variable mlp(const Variable& x, const Variable& fc_weight, const Variable& fc_bias, const Variable& proj_weight,
             const Variable& proj_bias);
Variable gelu(const Variable& x);
Variable softmax(const Variable& x);  // over the last dim
Variable layernorm(const Variable& x, const Variable& weight, const Variable& bias);  // over the last dim
// The residual add and the LayerNorm after it, computed in one pass on CUDA:
// returns {x + y, layernorm(x + y)}, as add() then layernorm() would.
std::pair<Variable, Variable> add_layernorm(const Variable& x, const Variable& y, const Variable& weight,
                                            const Variable& bias);

// Causal self-attention over qkv (B, T, 3C) -> (B, T, C), NH heads. On the
// CPU the naive form (itself on GEMMs there). On CUDA: the fused kernels on
// tensor cores where they run (bf16/f16, head sizes 16-64; the fastest on
// an H100 at GPT-2's shape); else batched GEMMs while the (B, NH, T, T)
// probabilities take at most kGemmAttentionMaxBytes; else the fused kernels
// on CUDA cores (head sizes up to 128); else the naive kernels.
Variable attention(const Variable& qkv, int64_t n_head);
// Each form explicitly: naive and GEMM save the (B, NH, T, T) probabilities,
// fused only (B, NH, T) log-sum-exps and recomputes in backward.
Variable naive_attention(const Variable& qkv, int64_t n_head);
Variable gemm_attention(const Variable& qkv, int64_t n_head);
Variable fused_attention(const Variable& qkv, int64_t n_head);
constexpr int64_t kFusedAttentionMaxHeadSize = 128;
// Which form attention() takes: automatic (above), or one for every call
// (to compare them); SG_ATTENTION=auto|naive|gemm|fused, read at each call,
// unless set_attention_form has chosen.
enum class AttentionForm { automatic, naive, gemm, fused };
void set_attention_form(AttentionForm form);
// The automatic choice for qkv of (B, T, 3C) in `dtype`, by shape alone
// (what attention() takes, and tools/activation_memory.h predicts from):
// `tensor_cores` says whether the fused tensor-core kernels apply to it.
AttentionForm automatic_attention_form(bool cuda, bool tensor_cores, DType dtype, int64_t B, int64_t T, int64_t C,
                                       int64_t n_head);
constexpr int64_t kGemmAttentionMaxBytes = int64_t(1) << 30;  // per layer; GPT-2 at T 1024, batch 16: 384 MiB in bf16

// Rows of table (V, C) picked by ids (any shape, i32/i64) -> ids.shape + (C).
Variable embedding(const Variable& table, const Tensor& ids);

// Mean cross-entropy (nats) of logits (.., V) against targets (..); targets
// < 0 are ignored and left out of the mean, like PyTorch's ignore_index.
Variable cross_entropy(const Variable& logits, const Tensor& targets);
// cross_entropy(linear(x, weight), targets) without a logits Variable: the
// node owns the logits and backward writes dlogits over them (one (N, V)
// buffer instead of two). GPT's loss uses it.
Variable linear_cross_entropy(const Variable& x, const Variable& weight, const Tensor& targets);
// The same loss with the logits made chunk_rows rows at a time, never all at
// once (autograd/chunked_loss.cpp): each chunk's gradient goes into dx and
// dW as soon as its losses are known, and backward only scales those by
// dloss / n. chunk_rows <= 0, or at least the rows there are: the above.
Variable chunked_linear_cross_entropy(const Variable& x, const Variable& weight, const Tensor& targets,
                                      int64_t chunk_rows);

Variable sum(const Variable& x);   // 0-d
Variable mean(const Variable& x);  // 0-d

}  // namespace sg
