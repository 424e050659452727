#include "examples/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/philox.h"
#include "tensor/rng.h"

namespace sg {

std::string generate(const Gpt& model, const Tokenizer& tokenizer, const std::string& prompt,
                     const SampleOptions& options) {
  NoGradGuard no_grad;
  std::vector<int32_t> context = tokenizer.encode(prompt);
  SG_CHECK(!context.empty(), "sampling needs a prompt of at least one token");
  const int64_t block = model.config().block_size, V = model.config().vocab_size;
  const uint64_t stream = rng_stream("sampling");
  std::vector<int32_t> generated;
  // The ids go where the model's parameters are (the CPU or a GPU).
  const Device device = model.named_parameters().front().variable.data().device();
  // The keys and values of the tokens fed so far (nn/gpt.h): each new token
  // attends to them, so a token costs one position's forward, not the
  // window's. GPT-2's positions are absolute, so once the window slides
  // (more than block_size tokens) every token runs the whole window again.
  KvCache cache;
  for (int64_t n = 0; n < options.tokens; ++n) {
    // The model sees at most block_size tokens: the most recent ones.
    const int64_t T = std::min<int64_t>(int64_t(context.size()), block);
    if (cache.length + 1 != T) cache = KvCache{};  // a new window: feed it all (the prompt, or after a slide)
    std::vector<int32_t> fresh(context.end() - (T - cache.length), context.end());
    const std::vector<float> last =
        model.extend(Tensor::from_vector(fresh, {1, int64_t(fresh.size())}).to(device), cache).to_vector<float>();
    // Keep the k likeliest, then softmax(logits / temperature) over them.
    std::vector<int32_t> order(static_cast<size_t>(V));
    std::iota(order.begin(), order.end(), 0);
    int64_t keep = options.top_k > 0 ? std::min(options.top_k, V) : V;
    std::partial_sort(order.begin(), order.begin() + keep, order.end(),
                      [&](int32_t a, int32_t b) { return last[size_t(a)] > last[size_t(b)]; });
    double max_logit = last[size_t(order[0])], total = 0.0;
    std::vector<double> weights(static_cast<size_t>(keep));
    for (int64_t i = 0; i < keep; ++i) {
      weights[size_t(i)] = std::exp((last[size_t(order[size_t(i)])] - max_logit) / options.temperature);
      total += weights[size_t(i)];
    }
    double draw = uniform_from_bits(philox_for_element(options.seed, stream, uint64_t(n)).x[0]) * total;
    int64_t pick = 0;
    while (pick + 1 < keep && draw >= weights[size_t(pick)]) draw -= weights[size_t(pick++)];
    int32_t token = order[size_t(pick)];
    context.push_back(token);
    generated.push_back(token);
  }
  return tokenizer.decode(generated);
}

}  // namespace sg
