// The tensor-level operations a GPT needs: each checks its inputs once (shape,
// dtype, device, placement), then calls the CPU kernel or its CUDA twin.
//
// These are raw, non-differentiable ops: forward functions return fresh
// tensors, and each backward function returns the gradients of its inputs.
// autograd/ wraps them into a tape. Conventions:
//   * Inputs may be any view; ops make them contiguous when a kernel needs it.
//     matmul reads transposed views in place (a transpose flag, no copy).
//   * Floating inputs of one op share one dtype. CPU kernels compute in f32
//     (bf16/f16 inputs are widened, the result narrowed back), or in f64 for
//     f64 inputs (gradient checks); CUDA kernels run bf16/f16 natively where
//     noted, with f32 accumulation, and refuse f64.
//   * Elementwise ops accept sharded tensors whose layouts are equal and touch
//     only the local shard; everything else needs replicated tensors.
//   * Index tensors (ids, targets) are i32 or i64.
//
// Read next: kernels/cpu/*.h for the math of each op.
#pragma once

#include <cstdint>

#include "kernels/adamw_math.h"
#include "tensor/tensor.h"

namespace sg {

// ---- elementwise (same shape) ----------------------------------------------
Tensor add(const Tensor& a, const Tensor& b);   // a + b            (CUDA: bf16 native)
Tensor mul(const Tensor& a, const Tensor& b);   // a * b            (CUDA: bf16 native)
Tensor scale(const Tensor& x, double factor);   // factor * x       (CUDA: bf16 native)
void scale_(Tensor& y, double factor);          // y *= factor, in place (gradient clipping)
void axpy_(Tensor& y, double alpha, const Tensor& x);  // y += alpha * x, in place (y f32 or f64; x f32/bf16/f16 into f32)

Tensor gelu(const Tensor& x);                                 // GELU, tanh form (CUDA: bf16 native)
Tensor gelu_backward(const Tensor& x, const Tensor& dout);    // dx

// Where a gradient op that can write in place puts a result: `tensor`
// (contiguous; f32 for f32/bf16/f16 inputs, f64 for f64), written, or added
// to with `add`. A parameter's gradient goes straight into its f32 buffer
// (autograd's claim_leaf_grad): summed in f32 and never rounded to 16 bits,
// with no cast and no separate add.
struct Destination {
  Tensor tensor;
  bool add = false;
  bool defined() const { return tensor.defined(); }
};

// ---- matrix multiply and bias -------------------------------------------------
// (M, K) @ (K, N) -> (M, N); (..., M, K) @ (K, N) folds the leading dims into M;
// (B.., M, K) @ (B.., K, N) is a batched product. Transposed views of
// contiguous tensors are passed as transpose flags. (CUDA: bf16 via cuBLAS.)
Tensor matmul(const Tensor& a, const Tensor& b);
// matmul(a, b) + bias (n) over every row: on CUDA the bias is added in
// cuBLASLt's epilogue (one pass over the output), on the CPU in place.
Tensor matmul_bias(const Tensor& a, const Tensor& b, const Tensor& bias);
// An MLP's first linear and its GELU: y = gelu(h), h = a @ b + bias (kept
// for backward), b (K, N). On CUDA with SG_GEMM_GELU_EPILOGUE=1 one GEMM
// whose epilogue adds the bias, writes h and applies GELU, where cuBLASLt
// has an algorithm; otherwise matmul_bias then gelu (CUDA), or matmul then
// bias_gelu_ (CPU).
struct LinearGeluOutput {
  Tensor y, h;
};
LinearGeluOutput matmul_bias_gelu(const Tensor& a, const Tensor& b, const Tensor& bias);
// dh = (dy @ b) * gelu'(h) as one GEMM with GELU's derivative in its
// epilogue, under the same terms; an undefined tensor where they do not
// hold (the caller then takes matmul and bias_gelu_backward).
Tensor matmul_gelu_backward(const Tensor& dy, const Tensor& b, const Tensor& h);
// a (M, K) @ b (K, N) into out (M, N) (transposed views read in place): a
// linear layer's weight gradient as one GEMM into its buffer (beta = 1 adds).
void matmul_into(const Destination& out, const Tensor& a, const Tensor& b);
// The same, with row_sums (M) = the sums of a's rows written by the same
// GEMM: a linear layer's dW = dy^T x and db = the column sums of dy at
// once. On CUDA with SG_GEMM_BIAS_GRAD_EPILOGUE=1, a read transposed (dy^T,
// a view) and row_sums written (not added) in out's dtype, where cuBLASLt
// has an algorithm (its BGRADB epilogue); false, with nothing done,
// otherwise (the caller then takes matmul_into and bias_backward_into).
bool matmul_into_with_row_sums(const Destination& out, const Tensor& a, const Tensor& b, const Destination& row_sums);
Tensor add_bias(const Tensor& x, const Tensor& bias);  // x (..., C) + bias (C)
// The same, in place, for a tensor nothing else holds yet (a fresh matmul
// output in linear's forward): saves a copy of the activation.
void add_bias_(Tensor& x, const Tensor& bias);
// linear + GELU's epilogue: pre (.., C), a fresh matmul output, becomes
// h = pre + bias in place; returns gelu(h). Backward: {dh, dbias}. Fused in
// one pass on the CPU in f32; elsewhere the separate ops.
Tensor bias_gelu_(Tensor& pre, const Tensor& bias);
struct BiasGeluGrads {
  Tensor dh, dbias;
};
// With a dbias destination, dbias goes there and the returned one is undefined.
BiasGeluGrads bias_gelu_backward(const Tensor& h, const Tensor& dy, const Destination& dbias = {});
Tensor bias_backward(const Tensor& dout);              // (..., C) -> dbias (C): column sums
void bias_backward_into(const Destination& dbias, const Tensor& dout);  // the same into dbias

// ---- normalization ------------------------------------------------------------
Tensor softmax(const Tensor& x);                              // over the last dim
Tensor softmax_backward(const Tensor& y, const Tensor& dy);   // y = softmax(x); returns dx

struct LayerNormOutput {
  Tensor out;   // (..., C)
  Tensor mean;  // (...) f32, saved for backward
  Tensor rstd;  // (...) f32, saved for backward
};
LayerNormOutput layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias);

struct LayerNormGrads {
  Tensor dx, dweight, dbias;
};
// add_to_dx (x's shape and dtype; optional): a gradient x already has from
// elsewhere, added into dx in the same pass (the residual stream's). With a
// destination for dweight or dbias, that gradient goes there (and the
// returned one is undefined).
LayerNormGrads layernorm_backward(const Tensor& dout, const Tensor& x, const Tensor& weight,
                                  const Tensor& mean, const Tensor& rstd, const Tensor& add_to_dx = Tensor(),
                                  const Destination& dweight = {}, const Destination& dbias = {});

// The residual add and the LayerNorm that follows it: sum = x + y, and norm
// = layernorm(sum). On CUDA one kernel (sum is written and normalized in the
// same pass); on the CPU the two ops. Backward is layernorm_backward on sum.
struct AddLayerNormOutput {
  Tensor sum;
  LayerNormOutput norm;
};
AddLayerNormOutput add_layernorm(const Tensor& x, const Tensor& y, const Tensor& weight, const Tensor& bias);

// ---- attention ------------------------------------------------------------------
struct AttentionOutput {
  Tensor out;  // (B, T, C)
  Tensor att;  // (B, NH, T, T) softmax probabilities, saved for backward
};
AttentionOutput attention(const Tensor& qkv, int64_t n_head);  // qkv (B, T, 3C), causal
Tensor attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& att, int64_t n_head);

// Attention's masked softmax over scores (..., T, T): row t takes
// softmax(scale * scores) over keys s <= t and 0 beyond; backward (written,
// not accumulated) is scale * P * (dP - rowsum(dP * P)).
Tensor causal_softmax(const Tensor& scores, double scale);
Tensor causal_softmax_backward(const Tensor& probabilities, const Tensor& dprobabilities, double scale);

// The same attention as batched GEMMs (cuBLAS on CUDA: tensor cores) around
// causal_softmax: S = Q K^T per head, P = causal_softmax(S, 1/sqrt(HS)),
// O = P V. .att is P (B, NH, T, T) in the compute dtype, kept for backward.
AttentionOutput gemm_attention(const Tensor& qkv, int64_t n_head);
Tensor gemm_attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& att, int64_t n_head);

// The same attention fused (kernels/cpu/flash_attention.h): no (T, T) matrix,
// only the log-sum-exp of each row's scores, (B, NH, T) in f32 (f64 for f64).
// CUDA kernels take f32/bf16/f16 as they are; head sizes up to 128 there.
struct FusedAttentionOutput {
  Tensor out;  // (B, T, C)
  Tensor lse;  // (B, NH, T)
};
FusedAttentionOutput fused_attention(const Tensor& qkv, int64_t n_head);
// Whether fused_attention(qkv) runs on tensor cores: CUDA, bf16/f16, head
// size 16, 32, 48 or 64, and SG_FLASH_TENSOR_CORES not 0.
bool fused_attention_on_tensor_cores(const Tensor& qkv, int64_t n_head);
Tensor fused_attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                                int64_t n_head);

// ---- embedding and loss ---------------------------------------------------------
Tensor embedding(const Tensor& table, const Tensor& ids);  // table (V, C), ids (...) -> (..., C)
Tensor embedding_backward(const Tensor& dout, const Tensor& ids, int64_t vocab_size);  // -> dtable (V, C)
// The same added into dtable (V, C) in position order (after clearing it
// unless adding): rows no id names are not touched.
void embedding_backward_into(const Destination& dtable, const Tensor& dout, const Tensor& ids);

struct CrossEntropyOutput {
  Tensor losses;  // (...) per-row loss in nats; 0 where the target is negative (ignored)
  Tensor lse;     // (...) logsumexp of each row, saved for backward
};
CrossEntropyOutput cross_entropy(const Tensor& logits, const Tensor& targets);  // logits (..., V)
Tensor cross_entropy_backward(const Tensor& dlosses, const Tensor& logits, const Tensor& lse,
                              const Tensor& targets);  // -> dlogits (..., V)

// The mean loss over rows whose target is not negative, and how many rows
// that is, as 0-d tensors on the losses' device (f32; f64 for f64). On the
// GPU both stay there: the backward below reads them on the device, so a
// training step needs no host round trip for its loss. Every row ignored:
// an error on the CPU, NaN on CUDA (PyTorch's mean of nothing).
struct CrossEntropyMean {
  Tensor loss, count;
};
CrossEntropyMean cross_entropy_mean(const Tensor& losses, const Tensor& targets);
// dlogits of that mean: dloss / count * (softmax - onehot) on counted rows.
// overwrite_logits: the caller gives the logits up, and dlogits is written
// over them (no second (N, V) buffer; autograd's linear_cross_entropy).
Tensor cross_entropy_mean_backward(const Tensor& dloss, const Tensor& count, const Tensor& logits, const Tensor& lse,
                                   const Tensor& targets, bool overwrite_logits = false);
// The per-row losses and g = softmax(logits) - onehot(targets) (0 on ignored
// rows) together: on CUDA one kernel, a single pass over the logits that
// writes g over them (the caller gives them up; g is a copy only where they
// were not contiguous in the compute dtype). The mean's gradient is then
// dloss / count * g, applied by the caller where the tensors are small
// (autograd's linear_cross_entropy).
struct CrossEntropyWithGrad {
  Tensor losses, grad;
};
CrossEntropyWithGrad cross_entropy_with_grad(const Tensor& logits, const Tensor& targets);
// x * (numerator / denominator), two single-number tensors on x's device,
// read there on CUDA (no host round trip); x's dtype. A denominator of 0
// gives 0: the gradient of a mean over no rows (every target ignored) is 0,
// as the two-pass loss and PyTorch give it, not 0 * inf = NaN.
Tensor scale_by_quotient(const Tensor& x, const Tensor& numerator, const Tensor& denominator);
// The same in place (x contiguous and whole; one pass, no second buffer).
void scale_by_quotient_(Tensor& x, const Tensor& numerator, const Tensor& denominator);

// ---- reductions to a 0-d f32 tensor on the input's device -------------------------
Tensor sum(const Tensor& x);
Tensor mean(const Tensor& x);
Tensor max(const Tensor& x);
Tensor squared_norm(const Tensor& x);  // sum of squares, for global-norm clipping
// The sum of every tensor's squared norm, as a 0-dim f32 (f64 for f64)
// tensor on their device: the global gradient norm in two CUDA launches
// (per 32 tensors one more) where squared_norm per tensor and adds take three
// each. All on one device, whole; summed in f64, in the tensors' order.
Tensor squared_norm_total(const std::vector<Tensor>& xs);
// AdamW's gradient factor after clipping to max_norm (kernels/adamw_math.h's
// clip_grad_factor) from a 0-dim sum of squares of gradients that carry
// loss_scale, as a 0-dim f32 on its device, computed there: the host reads
// nothing. skip_on_overflow (fp16): an inf/NaN norm gives NaN, and AdamW
// then skips the step (clip_grad_factor_or_skip).
Tensor clip_grad_factor(const Tensor& squares, double max_norm, double loss_scale = 1.0,
                        bool skip_on_overflow = false);

// ---- optimizer ------------------------------------------------------------------
// One AdamW step on f32 buffers of equal layout (whole tensors or shards), in place.
// copy (optional): a contiguous bf16/f16 buffer of as many elements that gets
// the updated parameters rounded, in the same pass (mixed precision's model
// parameters from the f32 masters).
void adamw_update_(Tensor& param, Tensor& m, Tensor& v, const Tensor& grad, const AdamWParams& hp,
                   Tensor* copy = nullptr);

}  // namespace sg
