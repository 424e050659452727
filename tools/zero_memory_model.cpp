#include "tools/zero_memory_model.h"

#include <algorithm>
#include <vector>

namespace sg {
namespace {

constexpr int64_t kAlign = 16;  // optim/zero.h's default slice alignment

int64_t padded(int64_t elements, int ranks) {
  const int64_t unit = kAlign * ranks;
  return (elements + unit - 1) / unit * unit;
}

// The groups ZeroOptimizer forms for a GPT: wte, wpe, per block its biases
// and norms (no decay) and its four weight matrices (decay), and ln_f.
std::vector<int64_t> group_elements(const GptConfig& cfg) {
  const int64_t C = cfg.n_embd;
  std::vector<int64_t> groups = {cfg.vocab_size * C, cfg.block_size * C};
  for (int64_t layer = 0; layer < cfg.n_layer; ++layer) {
    groups.push_back(2 * C + 3 * C + C + 2 * C + 4 * C + C);  // ln_1, c_attn.bias, c_proj.bias, ln_2, c_fc.bias, c_proj.bias
    groups.push_back(3 * C * C + C * C + 4 * C * C + 4 * C * C);  // c_attn, attn.c_proj, c_fc, mlp.c_proj weights
  }
  groups.push_back(2 * C);  // ln_f
  return groups;
}

}  // namespace

// 16 bytes a parameter at most, plus stage 3's buffers and the padding.
bool zero_memory_countable(const GptConfig& cfg) {
  const double C = double(cfg.n_embd);
  const double parameters = double(cfg.vocab_size + cfg.block_size) * C + double(cfg.n_layer) * (12 * C * C + 13 * C);
  return 24 * parameters + 1e12 < kMostBytesCounted;
}

ZeroMemoryEstimate estimate_zero_memory(const GptConfig& cfg, int ranks, int stage, DType dtype) {
  cfg.validate();
  SG_CHECK(zero_memory_countable(cfg), "a GPT of ", cfg.n_layer, " layers of ", cfg.n_embd, " channels (vocabulary ",
           cfg.vocab_size, ") would hold more than an exabyte of model states: not counted");
  SG_CHECK(ranks >= 1, "ranks must be at least 1, got ", ranks);
  SG_CHECK(stage >= 0 && stage <= 3, "ZeRO stage must be 0-3, got ", stage);
  SG_CHECK(dtype == DType::f32 || dtype == DType::bf16, "dtype must be f32 or bf16 (mixed precision), got ",
           dtype_name(dtype));
  ZeroMemoryEstimate e;
  for (int64_t n : group_elements(cfg)) {
    e.parameter_elements += n;
    e.padded_elements += padded(n, ranks);
    e.largest_group = std::max(e.largest_group, padded(n, ranks));
  }
  const int64_t P = e.padded_elements, slice = P / ranks;
  const bool mixed = dtype == DType::bf16;
  // Mixed precision keeps gradients in f32 (they accumulate over micro-batches
  // and ranks there); only the parameters the model reads are 2 bytes.
  const int64_t param_bytes = mixed ? 2 : 4, grad_bytes = 4, optimizer_bytes = mixed ? 12 : 8;
  e.parameters = param_bytes * (stage == 3 ? slice : P);
  e.gradients = grad_bytes * (stage >= 2 ? slice : P);
  if (stage == 1) e.gradients += 4 * slice;  // the reduce-scattered slice beside the full gradients
  e.optimizer_states = optimizer_bytes * (stage >= 1 ? slice : P);
  // Stage 3 (optim/gather_schedule.h): during forward the token embedding
  // stays gathered (the tied head reads it again at the end), beside a
  // block's two groups and one group being prefetched.
  if (stage == 3) e.gather_buffers = param_bytes * (padded(cfg.vocab_size * cfg.n_embd, ranks) + 3 * e.largest_group);
  return e;
}

int64_t max_layers_that_fit(GptConfig cfg, int ranks, int stage, DType dtype, int64_t bytes_per_rank,
                            const ActivationOptions* activations) {
  int64_t best = 0;
  for (int64_t layers = 1; layers <= 4096; ++layers) {
    cfg.n_layer = layers;
    if (!zero_memory_countable(cfg) || (activations && !activation_bytes_countable(cfg, *activations))) break;
    int64_t bytes = estimate_zero_memory(cfg, ranks, stage, dtype).total();
    if (activations) bytes += estimate_activations(cfg, *activations).peak;
    if (bytes > bytes_per_rank) break;
    best = layers;
  }
  return best;
}

int64_t max_batch_that_fits(const GptConfig& cfg, int ranks, int stage, DType dtype, ActivationOptions activations,
                            int64_t bytes_per_rank) {
  const int64_t states = estimate_zero_memory(cfg, ranks, stage, dtype).total();
  auto fits = [&](int64_t batch) {
    activations.batch = batch;
    return activation_bytes_countable(cfg, activations) &&
           states + estimate_activations(cfg, activations).peak <= bytes_per_rank;
  };
  if (!fits(1)) return 0;
  // The peak grows with the batch: double past the limit, then bisect.
  int64_t low = 1, high = 2;
  while (high < (int64_t(1) << 40) && fits(high)) low = high, high *= 2;
  while (high - low > 1) {
    const int64_t middle = low + (high - low) / 2;
    (fits(middle) ? low : high) = middle;
  }
  return low;
}

}  // namespace sg
