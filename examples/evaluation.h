// A model's cross-entropy on a text, the way gpt_eval measures it: the text
// cut into consecutive non-overlapping windows of T + 1 tokens (window k
// holds tokens kT .. kT + T and predicts the last T of them from the first
// T; a partial tail is dropped), averaged over every predicted token.
#pragma once

#include <cstdint>
#include <vector>

#include "nn/gpt.h"

namespace sg {

struct TextLoss {
  double nats_per_token = 0;
  int64_t tokens = 0;  // predicted tokens: windows x T
};

TextLoss evaluate_text(const Gpt& model, const std::vector<int32_t>& tokens, int64_t T, int64_t batch = 8);

}  // namespace sg
