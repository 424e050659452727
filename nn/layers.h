// The building blocks: Linear, Embedding, LayerNorm. Each registers its
// parameters with param() and is called with (). Shapes on every call.
//
// Read next: nn/gpt.h.
#pragma once

#include <cstdint>

#include "autograd/functions.h"
#include "nn/module.h"

namespace sg {

// y = x W^T + b, as PyTorch's nn.Linear: weight (out, in), bias (out).
class Linear : public Module {
 public:
  struct Options {
    bool bias = true;
    double init_std = 0.02;  // GPT-2's; residual projections pass 0.02 / sqrt(2 L)
  };
  Linear(int64_t in_features, int64_t out_features, Options options);
  Linear(int64_t in_features, int64_t out_features) : Linear(in_features, out_features, Options{}) {}

  Variable operator()(const Variable& x) const { return linear(x, weight_, bias_); }  // (.., in) -> (.., out)
  const Variable& weight() const { return weight_; }
  const Variable& bias() const { return bias_; }  // undefined without one

 private:
  Variable weight_, bias_;
};

// Rows of a (num, dim) table picked by integer ids.
class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim, double init_std = 0.02);
  Variable operator()(const Tensor& ids) const { return embedding(weight_, ids); }  // ids (..) -> (.., dim)
  const Variable& weight() const { return weight_; }

 private:
  Variable weight_;
};

// Normalizes the last dimension: weight starts at 1, bias at 0.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim);
  Variable operator()(const Variable& x) const { return layernorm(x, weight_, bias_); }  // (.., dim) -> (.., dim)
  // {x + y, this(x + y)}: a residual add and this norm, one pass on CUDA.
  std::pair<Variable, Variable> add_and_normalize(const Variable& x, const Variable& y) const {
    return add_layernorm(x, y, weight_, bias_);
  }

 private:
  Variable weight_, bias_;
};

}  // namespace sg
