#include "tools/activation_memory.h"

#include <algorithm>

#include "autograd/functions.h"
#include "kernels/cuda/sum_output.h"

namespace sg {
namespace {

constexpr int64_t kStat = 4;  // f32 statistics

// What attention(qkv, NH) keeps beyond qkv and its output, by the form its
// automatic choice takes (autograd's automatic_attention_form, with the
// switches at their defaults). Whether the tensor-core kernels apply is
// the one thing asked here rather than of the kernels (flash_tensor_cores_apply),
// which a build without CUDA does not have: 16-bit heads of 16-64 channels,
// a multiple of 16.
int64_t attention_bytes(const GptConfig& cfg, const ActivationOptions& o, int64_t s, std::string& form) {
  const int64_t B = o.batch, T = cfg.block_size, NH = cfg.n_head, hs = cfg.n_embd / cfg.n_head;
  const int64_t probabilities = B * NH * T * T, log_sum_exps = B * NH * T;
  const bool tensor_cores =
      (o.dtype == DType::bf16 || o.dtype == DType::f16) && hs % 16 == 0 && hs >= 16 && hs <= 64;
  switch (automatic_attention_form(o.cuda, o.cuda && tensor_cores, o.dtype, B, T, cfg.n_embd, NH)) {
    case AttentionForm::fused:
      form = tensor_cores ? "fused, tensor cores (each row's log-sum-exp)" : "fused (each row's log-sum-exp)";
      return log_sum_exps * kStat;
    case AttentionForm::gemm: form = "GEMMs (the probabilities, B NH T^2)"; return probabilities * s;
    default: form = "naive (the probabilities in f32, B NH T^2)"; return probabilities * kStat;
  }
}

}  // namespace

// Every term, in doubles and generously: a block's 16 M C s, statistics and
// probabilities, the head's, and the moments' extras.
bool activation_bytes_countable(const GptConfig& cfg, const ActivationOptions& o) {
  const double B = double(o.batch), T = double(cfg.block_size), C = double(cfg.n_embd), M = B * T;
  const double per_block = 20 * M * C * 4 + 16 * M + 4 * B * double(cfg.n_head) * T * T;
  const double head = 4 * M * C * 4 + 20 * M + 4 * M * double(cfg.vocab_size) + 24 * double(cfg.vocab_size) * C;
  return double(cfg.n_layer) * per_block + 2 * per_block + head + 16 * (8 * C * C + 5 * C) < kMostBytesCounted;
}

ActivationEstimate estimate_activations(const GptConfig& cfg, const ActivationOptions& o) {
  cfg.validate();
  SG_CHECK(o.batch >= 1, "the micro-batch must be at least 1 sequence, got ", o.batch);
  SG_CHECK(activation_bytes_countable(cfg, o), "the activations of a micro-batch of ", o.batch, " x ", cfg.block_size,
           " tokens (", cfg.n_layer, " layers, ", cfg.n_embd, " channels, vocabulary ", cfg.vocab_size,
           ") would take more than an exabyte: not counted");
  SG_CHECK(o.stage >= 0 && o.stage <= 3, "ZeRO stage must be 0-3, got ", o.stage);
  SG_CHECK(o.dtype == DType::f32 || (o.cuda && (o.dtype == DType::bf16 || o.dtype == DType::f16)),
           "activation estimates are for f32, or bf16/f16 on CUDA, got ", dtype_name(o.dtype), o.cuda ? "" : " on a CPU",
           " (a CPU's 16-bit kernels compute through f32 copies: a testing path)");
  const int64_t s = int64_t(dtype_size(o.dtype)), B = o.batch, T = cfg.block_size, C = cfg.n_embd;
  const int64_t V = cfg.vocab_size, L = cfg.n_layer, M = B * T, MC = M * C;
  ActivationEstimate e;
  const int64_t block = 16 * MC * s + 4 * M * kStat + attention_bytes(cfg, o, s, e.attention);
  e.per_block = o.checkpointed ? 2 * MC * s : block;
  // ln_f's sum, output and statistics, the logits, then the loss and the
  // count of its rows (f32 scalars); without CUDA's fused loss, each row's
  // log-sum-exp too. Chunked (autograd/chunked_loss.cpp): ln_f's sum and
  // statistics, dx (M C) and dW's f32 sums (V C) instead of the output and
  // the logits.
  const int64_t VC = V * C, chunk = std::min(o.loss_chunk_rows, M);
  const bool chunked = chunk > 0 && chunk < M;
  e.head = chunked ? 2 * MC * s + 2 * M * kStat + VC * kStat + 2 * kStat
                   : 2 * MC * s + 2 * M * kStat + M * V * s + (o.cuda ? 0 : M * kStat) + 2 * kStat;
  e.inputs = 3 * M * 4;
  e.kept = e.inputs + L * e.per_block + e.head;

  // From stage 2 the parameter gradients are tensors of their own until
  // reduced: the tied head's (V C) waits for the token embedding's, and the
  // MLP's weights and biases (8 C^2 + 5 C) are live in its backward.
  const bool temporaries = o.stage >= 2;
  const int64_t tied_gradient = temporaries ? VC * s : 0;
  // The MLP's backward, in autograd's mlp() order: da = dy W2 (4 M C), dh
  // (4 M C), dx = dh W1 (M C), all live at its end with every gradient of
  // its parameters (8 C^2 + 5 C, from stage 2). On CUDA, dh and fc's bias
  // gradient come from one kernel, whose column sums take kColumnSumChunks
  // f32 partial rows (4 C wide) of scratch, beside c_proj's weight and bias
  // gradients and fc's fresh bias gradient (from stage 2): that moment can
  // be the larger one.
  int64_t mlp_transient = 9 * MC * s + (temporaries ? (8 * C * C + 5 * C) * s : 0);
  if (o.cuda) {
    const int64_t sums = cuda::kColumnSumChunks * 4 * C * kStat;
    mlp_transient = std::max(mlp_transient, 8 * MC * s + sums + (temporaries ? (4 * C * C + 5 * C) * s : 0));
  }
  // Backward's seed, d loss / d loss = 1, is an f32 scalar beside them.
  // Chunked, the head's backward scales dx and dW's sums where they are,
  // and from stage 2 rounds dW to s bytes (a new tensor where s is 2).
  const int64_t head_moment = chunked ? e.kept + kStat + (temporaries && s != kStat ? VC * s : 0)
                                      : e.kept + kStat + (o.cuda ? 3 : 1) * MC * s + tied_gradient;
  // Chunked, a moment of the forward can be the largest: the blocks' and
  // ln_f's tensors (its output too), the rows' losses, dx, dW's sums, and a
  // chunk's logits (now its gradient), losses and dx.
  const int64_t forward_moment = chunked ? e.kept - e.head + 2 * MC * s + 2 * M * kStat + M * kStat + MC * s +
                                               VC * kStat + chunk * (V * s + kStat + C * s)
                                         : 0;
  // The head's tensors are gone but for the loss (its caller holds it); the
  // residual stream's gradient (M C) is the MLP's dy. Checkpointed, the
  // last block has run again: its tensors and its MLP's output (M C) are
  // live beside its two kept inputs.
  int64_t block_moment = e.kept - e.head + 2 * kStat + MC * s + tied_gradient + mlp_transient;
  if (o.checkpointed) block_moment += block + MC * s;
  // Last, from stage 2, the token embedding's gradient meets the tied
  // head's: embedding_backward sums into an f32 (V, C) table and rounds it
  // to s bytes, then the engine adds the two into a fresh tensor. Only the
  // batch, the loss, the seed and dy (M C) are left by then.
  int64_t embedding_moment = 0;
  if (temporaries) {
    const int64_t table = VC * kStat + (s == kStat ? 0 : VC * s);
    embedding_moment = e.inputs + 2 * kStat + MC * s + VC * s + std::max(table, 2 * VC * s);
  }
  e.peak = std::max({head_moment, block_moment, embedding_moment, forward_moment});
  return e;
}

}  // namespace sg
