#include "examples/evaluation.h"

#include <algorithm>

namespace sg {

TextLoss evaluate_text(const Gpt& model, const std::vector<int32_t>& tokens, int64_t T, int64_t batch) {
  SG_CHECK(T > 0 && batch > 0, "evaluate_text: the context and batch must be positive");
  const int64_t windows = tokens.empty() ? 0 : (int64_t(tokens.size()) - 1) / T;
  SG_CHECK(windows > 0, "the text has ", tokens.size(), " tokens: too few for one window of ", T + 1);
  NoGradGuard no_grad;
  double total = 0;
  for (int64_t first = 0; first < windows; first += batch) {
    const int64_t rows = std::min(batch, windows - first);
    std::vector<int32_t> x(size_t(rows * T)), y(size_t(rows * T));
    for (int64_t r = 0; r < rows; ++r) {
      const auto start = tokens.begin() + (first + r) * T;
      std::copy_n(start, T, x.begin() + r * T);
      std::copy_n(start + 1, T, y.begin() + r * T);
    }
    Variable loss = model.loss(Tensor::from_vector(x, {rows, T}), Tensor::from_vector(y, {rows, T}));
    total += loss.data().item() * double(rows * T);  // the loss is the mean over rows x T
  }
  return {total / double(windows * T), windows * T};
}

}  // namespace sg
