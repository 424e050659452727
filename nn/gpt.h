// GPT-2: learned token and position embeddings, pre-LayerNorm transformer
// blocks, a final LayerNorm, and an LM head tied to the token embedding.
// Parameter names are GPT-2's (wte.weight, h.3.attn.c_attn.weight, ...), so
// checkpoints and exports read like every other GPT-2.
//
// Shapes: B batch, T time (<= block_size), C = n_embd, NH = n_head,
// HS = C / NH, V = vocab_size, L = n_layer.
//
// Read next: docs/gpt.md, then examples/train_gpt.cpp.
#pragma once

#include <cstdint>
#include <vector>

#include "nn/layers.h"

namespace sg {

struct GptConfig {
  int64_t vocab_size = 65;
  int64_t block_size = 128;  // longest context T
  int64_t n_layer = 4;
  int64_t n_head = 4;
  int64_t n_embd = 128;
  uint64_t seed = 1337;  // initialization

  void validate() const;  // throws with what to change
};

// qkv = c_attn(x); y = softmax(q k^T / sqrt(HS) + causal mask) v; out = c_proj(y)
class CausalSelfAttention : public Module {
 public:
  explicit CausalSelfAttention(const GptConfig& cfg);
  Variable operator()(const Variable& x) const;  // (B, T, C) -> (B, T, C)
  // For sampling (Gpt::extend): x (B, n, C) are the tokens after the `start`
  // whose keys and values `keys` and `values` (B, NH, context, HS) hold;
  // theirs are written after them. The first call (start 0) is the forward
  // above; later ones take one token, which attends to all keys so far.
  Variable extend(const Variable& x, Tensor& keys, Tensor& values, int64_t start) const;

 private:
  int64_t n_head_;
  Linear c_attn_, c_proj_;
};

// c_proj(gelu(c_fc(x))), 4x wider in the middle.
class Mlp : public Module {
 public:
  explicit Mlp(const GptConfig& cfg);
  // (B, T, C) -> (B, T, C): one autograd node (autograd/functions.h), c_fc's
  // bias and the GELU fused, on CUDA optionally in the GEMMs' epilogues.
  Variable operator()(const Variable& x) const {
    return mlp(x, c_fc_.weight(), c_fc_.bias(), c_proj_.weight(), c_proj_.bias());
  }

 private:
  Linear c_fc_, c_proj_;
};

// The residual stream between blocks as a sum not yet added: x = a + b.
// Whoever reads x next starts with a LayerNorm, which adds the two in the
// same kernel (LayerNorm::add_and_normalize), so no (B, T, C) pass is spent
// on an add alone.
struct ResidualSum {
  Variable a, b;
};

// One pre-LayerNorm block:  x += attn(ln_1(x));  x += mlp(ln_2(x))
class Block : public Module {
 public:
  explicit Block(const GptConfig& cfg);
  Variable operator()(const Variable& x) const {  // (B, T, C) -> (B, T, C)
    ResidualSum out = rest(x, ln1_(x));
    return add(out.a, out.b);
  }
  // The same with the input and the output left as sums: every residual add
  // runs fused with the LayerNorm after it (ln_1, ln_2, then the next
  // block's ln_1 or ln_f), one kernel on CUDA.
  ResidualSum operator()(const ResidualSum& x) const {
    auto [sum, normalized] = ln1_.add_and_normalize(x.a, x.b);
    return rest(sum, normalized);
  }
  // The same for sampling, with attention's keys and values kept
  // (CausalSelfAttention::extend).
  Variable extend(const Variable& x, Tensor& keys, Tensor& values, int64_t start) const {
    auto [residual, normalized_2] = ln2_.add_and_normalize(x, attn_.extend(ln1_(x), keys, values, start));
    return add(residual, mlp_(normalized_2));
  }

 private:
  // x and ln_1(x) -> {x + attn(ln_1(x)), mlp(ln_2(that))}.
  ResidualSum rest(const Variable& x, const Variable& normalized) const {
    auto [residual, normalized_2] = ln2_.add_and_normalize(x, attn_(normalized));
    return {residual, mlp_(normalized_2)};
  }

  LayerNorm ln1_;
  CausalSelfAttention attn_;
  LayerNorm ln2_;
  Mlp mlp_;
};

// For sampling token by token: each block's keys and values of the tokens
// fed so far (a KV cache), so that the next token attends to them without
// the sequence running again. Gpt::extend fills it; a new sequence (or a
// context that has slid) starts from an empty one.
struct KvCache {
  std::vector<Tensor> keys, values;  // a layer each, (B, NH, block_size, HS)
  int64_t length = 0;                // tokens held
};

class Gpt : public Module {
 public:
  explicit Gpt(const GptConfig& cfg);  // builds and initializes with cfg.seed

  Variable operator()(const Tensor& idx) const;                       // idx (B, T) -> logits (B, T, V)
  Variable loss(const Tensor& idx, const Tensor& targets) const;      // mean cross-entropy, nats
  Variable hidden(const Tensor& idx) const;                           // idx (B, T) -> after ln_f (B, T, C)
  // For sampling, the next token's logits (B, V), no gradients, for the
  // tokens `idx` (B, n) that follow those in `cache`, whose keys and values
  // are kept there: all of a sequence's tokens at first (an empty cache),
  // then one at a time, each attending to the cached keys instead of the
  // whole sequence running again. length + n must not pass the context
  // (block_size). The head runs on the last position alone: at GPT-2's
  // vocabulary and T 1024, 1/1024 of its work and none of its (T, V) logits.
  Tensor extend(const Tensor& idx, KvCache& cache) const;
  const GptConfig& config() const { return cfg_; }
  // Activation checkpointing (autograd/checkpoint.h): each block runs in
  // forward without keeping its activations, and again in backward. Keeps
  // the residual stream between blocks and one block's activations instead
  // of all of them, for one more forward of the blocks; the same gradients
  // to the bit. A training choice, not part of the architecture (no file
  // records it).
  void checkpoint_activations(bool on) { checkpoint_blocks_ = on; }
  // loss() with the LM head and loss `rows` tokens at a time
  // (autograd/chunked_loss.cpp): the (tokens, vocabulary) logits are never
  // all in memory. 0: all at once. A training choice too.
  void loss_chunk_rows(int64_t rows) { loss_chunk_rows_ = rows; }

 private:
  GptConfig cfg_;
  bool checkpoint_blocks_ = false;
  int64_t loss_chunk_rows_ = 0;
  Tensor head_of_last(const Tensor& h) const;  // h (B, T, C) after ln_f -> the last row's logits (B, V)
  mutable Tensor positions_;  // (B, T) position ids of the last call, reused while B, T and device match
  Embedding wte_, wpe_;
  std::vector<Block> h_;
  LayerNorm ln_f_;
};

}  // namespace sg
