// Autoregressive sampling: feed the context, turn the last position's logits
// into probabilities (temperature, top-k), draw the next token, repeat.
#pragma once

#include <cstdint>
#include <string>

#include "examples/text_data.h"
#include "nn/gpt.h"

namespace sg {

struct SampleOptions {
  int64_t tokens = 200;
  double temperature = 1.0;
  int64_t top_k = 0;  // 0: every token
  uint64_t seed = 0;
};

// Generates `options.tokens` tokens after `prompt` and returns them decoded.
std::string generate(const Gpt& model, const Tokenizer& tokenizer, const std::string& prompt,
                     const SampleOptions& options);

}  // namespace sg
