// gpt_eval's windows: consecutive, non-overlapping, T + 1 tokens each (the
// last token of one window is the first of the next), the tail dropped, the
// mean taken over every predicted token, whatever the batch.
#include <gtest/gtest.h>

#include <cmath>

#include "examples/evaluation.h"

namespace sg {
namespace {

TEST(EvaluateText, ConsecutiveWindowsOfTPlusOneTokens) {
  GptConfig cfg;
  cfg.vocab_size = 11, cfg.block_size = 4, cfg.n_layer = 1, cfg.n_head = 2, cfg.n_embd = 8, cfg.seed = 2;
  Gpt model(cfg);
  std::vector<int32_t> tokens;
  for (int i = 0; i < 23; ++i) tokens.push_back(int32_t((i * 7) % 11));
  const int64_t T = 4;  // (23 - 1) / 4 = 5 windows: tokens 0..4, 4..8, ..., 16..20; 21-22 dropped
  double total = 0;
  for (int64_t k = 0; k < 5; ++k) {
    std::vector<int32_t> x(tokens.begin() + k * T, tokens.begin() + k * T + T);
    std::vector<int32_t> y(tokens.begin() + k * T + 1, tokens.begin() + k * T + T + 1);
    NoGradGuard no_grad;
    total += model.loss(Tensor::from_vector(x, {1, T}), Tensor::from_vector(y, {1, T})).data().item() * T;
  }
  for (int64_t batch : {1, 2, 8}) {
    TextLoss loss = evaluate_text(model, tokens, T, batch);
    EXPECT_EQ(loss.tokens, 20);
    EXPECT_NEAR(loss.nats_per_token, total / 20, 1e-6) << "batch " << batch;
  }
  EXPECT_THROW(evaluate_text(model, std::vector<int32_t>(4, 1), T), Error);  // not one whole window
}

}  // namespace
}  // namespace sg
