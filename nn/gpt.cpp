#include "nn/gpt.h"

#include <cmath>
#include <string>
#include <vector>

#include "autograd/checkpoint.h"

namespace sg {

void GptConfig::validate() const {
  SG_CHECK(vocab_size > 0 && block_size > 0 && n_layer > 0 && n_head > 0 && n_embd > 0,
           "GPT config: every size must be positive (vocab ", vocab_size, ", context ", block_size, ", layers ", n_layer,
           ", heads ", n_head, ", channels ", n_embd, ")");
  SG_CHECK(n_embd % n_head == 0, "GPT config: --embd ", n_embd, " must be divisible by --heads ", n_head,
           " (each head gets embd/heads channels)");
}

CausalSelfAttention::CausalSelfAttention(const GptConfig& cfg)
    : n_head_(cfg.n_head),
      c_attn_(child("c_attn", Linear(cfg.n_embd, 3 * cfg.n_embd))),
      // GPT-2 scales the init of the projections that write into the residual
      // stream by 1/sqrt(2L): 2L of them add up along the residual path.
      c_proj_(child("c_proj", Linear(cfg.n_embd, cfg.n_embd, {.bias = true, .init_std = 0.02 / std::sqrt(2.0 * cfg.n_layer)}))) {}

Variable CausalSelfAttention::operator()(const Variable& x) const {
  Variable qkv = c_attn_(x);                 // (B, T, 3C): [q | k | v] per token
  return c_proj_(attention(qkv, n_head_));  // (B, T, C)
}

Variable CausalSelfAttention::extend(const Variable& x, Tensor& keys, Tensor& values, int64_t start) const {
  const Variable qkv = c_attn_(x);  // (B, n, 3C)
  const int64_t B = qkv.shape()[0], n = qkv.shape()[1], C = qkv.shape()[2] / 3, HS = C / n_head_;
  // Part 0, 1 or 2 (q, k or v) as heads: (B, NH, n, HS), a view of qkv.
  auto heads = [&](int64_t part) {
    return qkv.data().slice(2, part * C, (part + 1) * C).reshape({B, n, n_head_, HS}).permute({0, 2, 1, 3});
  };
  keys.slice(2, start, start + n).copy_(heads(1));
  values.slice(2, start, start + n).copy_(heads(2));
  if (start == 0) return c_proj_(attention(qkv, n_head_));  // the whole sequence: the forward's own attention
  SG_CHECK(n == 1, "CausalSelfAttention::extend: after the first call, one token at a time (got ", n, ")");
  // One query over every key so far: no mask, as none of them is after it.
  const int64_t L = start + 1;
  // (B, NH, L, HS) views of the caches: the GEMMs read them in place, a
  // uniform stride from one head to the next.
  const Tensor k = keys.slice(2, 0, L), v = values.slice(2, 0, L);
  const Tensor scores = matmul(heads(0), k.transpose(2, 3));  // (B, NH, 1, L)
  const Tensor p = softmax(scale(scores, 1.0 / std::sqrt(double(HS))));
  return c_proj_(Variable(matmul(p, v).reshape({B, 1, C})));  // (B, NH, 1, HS) is (B, 1, NH HS) in memory
}

Mlp::Mlp(const GptConfig& cfg)
    : c_fc_(child("c_fc", Linear(cfg.n_embd, 4 * cfg.n_embd))),
      c_proj_(child("c_proj", Linear(4 * cfg.n_embd, cfg.n_embd, {.bias = true, .init_std = 0.02 / std::sqrt(2.0 * cfg.n_layer)}))) {}

Block::Block(const GptConfig& cfg)
    : ln1_(child("ln_1", LayerNorm(cfg.n_embd))),
      attn_(child("attn", CausalSelfAttention(cfg))),
      ln2_(child("ln_2", LayerNorm(cfg.n_embd))),
      mlp_(child("mlp", Mlp(cfg))) {}

namespace {
const GptConfig& validated(const GptConfig& cfg) {
  cfg.validate();
  return cfg;
}
}  // namespace

Gpt::Gpt(const GptConfig& cfg)
    : cfg_(validated(cfg)),
      wte_(child("wte", Embedding(cfg.vocab_size, cfg.n_embd))),
      wpe_(child("wpe", Embedding(cfg.block_size, cfg.n_embd))),
      h_([&] {
        std::vector<Block> blocks;
        for (int64_t i = 0; i < cfg.n_layer; ++i) blocks.push_back(child("h." + std::to_string(i), Block(cfg)));
        return blocks;
      }()),
      ln_f_(child("ln_f", LayerNorm(cfg.n_embd))) {
  initialize(cfg.seed);
}

Variable Gpt::operator()(const Tensor& idx) const {
  return linear(hidden(idx), wte_.weight(), Variable());  // (B, T, V): the LM head is wte itself, x @ wte^T
}

Tensor Gpt::head_of_last(const Tensor& h) const {
  const int64_t B = h.size(0), T = h.size(1);
  const Variable last(h.slice(1, T - 1, T).reshape({B, cfg_.n_embd}));
  return linear(last, wte_.weight(), Variable()).data();  // (B, V)
}

Tensor Gpt::extend(const Tensor& idx, KvCache& cache) const {
  NoGradGuard no_grad;
  SG_CHECK(idx.dim() == 2 && idx.size(1) >= 1, "Gpt::extend: token ids (B, n) with n >= 1, got ", idx.str());
  const int64_t B = idx.size(0), n = idx.size(1), start = cache.length;
  SG_CHECK(start + n <= cfg_.block_size, "Gpt::extend: ", start, " cached and ", n, " new tokens pass the context of ",
           cfg_.block_size, "; start a new cache from the last ", cfg_.block_size, " tokens");
  if (start == 0) {
    const int64_t HS = cfg_.n_embd / cfg_.n_head;
    const TensorOptions options = TensorOptions().dtype(wte_.weight().data().dtype()).device(idx.device());
    cache.keys.assign(size_t(cfg_.n_layer), Tensor()), cache.values.assign(size_t(cfg_.n_layer), Tensor());
    for (size_t l = 0; l < h_.size(); ++l) {
      cache.keys[l] = Tensor::empty({B, cfg_.n_head, cfg_.block_size, HS}, options);
      cache.values[l] = Tensor::empty({B, cfg_.n_head, cfg_.block_size, HS}, options);
    }
  }
  SG_CHECK(cache.keys.size() == h_.size() && cache.keys[0].size(0) == B, "Gpt::extend: this cache holds ",
           cache.keys.empty() ? 0 : cache.keys[0].size(0), " sequences of another model or batch; got ", B);
  std::vector<int32_t> positions(size_t(B * n));
  for (int64_t i = 0; i < B * n; ++i) positions[size_t(i)] = int32_t(start + i % n);
  const Tensor pos = Tensor::from_vector(positions, {B, n}, TensorOptions().dtype(DType::i32).device(idx.device()));
  Variable x = add(wte_(idx), wpe_(pos));
  for (size_t l = 0; l < h_.size(); ++l) x = h_[l].extend(x, cache.keys[l], cache.values[l], start);
  cache.length = start + n;
  return head_of_last(ln_f_(x).data());
}

// The same head and the loss in one node that owns the logits, so backward
// writes dlogits over them (autograd's linear_cross_entropy): for GPT-2 at
// T 1024, batch 8, one (8192, 50304) buffer instead of two.
Variable Gpt::loss(const Tensor& idx, const Tensor& targets) const {
  if (loss_chunk_rows_ > 0) return chunked_linear_cross_entropy(hidden(idx), wte_.weight(), targets, loss_chunk_rows_);
  return linear_cross_entropy(hidden(idx), wte_.weight(), targets);
}

Variable Gpt::hidden(const Tensor& idx) const {
  SG_CHECK(idx.dim() == 2, "GPT input must be token ids (B, T), got ", idx.str());
  const int64_t B = idx.size(0), T = idx.size(1);
  SG_CHECK(T <= cfg_.block_size, "GPT input has T = ", T, " tokens, more than the context of ", cfg_.block_size,
           "; crop it or train with a larger --ctx");
  // Positions 0..T-1 for every row: an embedding of (B, T) ids, so no
  // broadcast is needed. Kept between calls: on a GPU, building them anew
  // would be a host-to-device copy (and a wait) in every forward.
  if (!positions_.defined() || positions_.shape() != Shape{B, T} || positions_.device() != idx.device()) {
    std::vector<int32_t> positions(static_cast<size_t>(B * T));
    for (int64_t i = 0; i < B * T; ++i) positions[size_t(i)] = int32_t(i % T);
    positions_ = Tensor::from_vector(positions, {B, T}, TensorOptions().dtype(DType::i32).device(idx.device()));
  }
  ResidualSum x{wte_(idx), wpe_(positions_)};  // (B, T, C) each; block 0's ln_1 adds them
  for (const Block& block : h_) {
    if (!checkpoint_blocks_) {
      x = block(x);
      continue;
    }
    // The block's two inputs (the residual stream as a sum not yet added)
    // are all it keeps; its parameters are named so that backward counts
    // them as reached before the block runs again.
    const Block* b = &block;
    std::vector<Variable> out = checkpoint(
        [b](const std::vector<Variable>& in) {
          ResidualSum y = (*b)(ResidualSum{in[0], in[1]});
          return std::vector<Variable>{y.a, y.b};
        },
        {x.a, x.b}, block.parameters());
    x = ResidualSum{out[0], out[1]};
  }
  return ln_f_.add_and_normalize(x.a, x.b).second;
}

}  // namespace sg
