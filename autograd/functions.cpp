// Forward and backward of every differentiable op, side by side. Each
// backward lambda gets dL/d(output) and returns dL/d(input) for each input,
// computed with the raw ops of tensor/ops.h. Comments give the derivative.
//
// Inputs are read with value(), in forward and again inside backward rules,
// which hold the input Variables rather than their tensors: a ZeRO-3
// parameter is then gathered when a rule needs it (its before-use hook) and
// not kept alive from forward to backward by the closure.
#include "autograd/functions.h"

#include <cstdlib>
#include <optional>
#include <string>
#include <utility>

#include "kernels/env_switch.h"
#include "tensor/ops.h"

namespace sg {
namespace {

// Matrices (.., M, K) as (M', K) with the leading dims folded into rows.
Tensor as_rows(const Tensor& x) { return x.reshape({-1, x.size(-1)}); }

// Parameter gradients go straight into the parameter's gradient buffer
// when it has one (claim_leaf_grad: ZeRO's f32 flat buffers), summed in
// f32 there with no 16-bit result, no cast and no separate add when
// gradients accumulate; the rule then returns an undefined gradient.

// A linear layer's dW = dy'^T x' (dy' and x' folded into rows): one GEMM,
// into the claimed buffer `into` when there is one.
Tensor weight_grad_into(const Destination& into, const Tensor& dy, const Tensor& input) {
  const Tensor dy_t = as_rows(dy).transpose(0, 1), rows = as_rows(input);
  if (!into.defined()) return sg::matmul(dy_t, rows);
  matmul_into(into, dy_t, rows);
  return Tensor();
}

Tensor weight_grad(const Variable& weight, const Tensor& dy, const Tensor& input) {
  return weight_grad_into(claim_leaf_grad(weight, dy.dtype()), dy, input);
}

// A bias's db = the column sums of dy, likewise.
Tensor bias_grad_into(const Destination& into, const Tensor& dy) {
  if (!into.defined()) return sg::bias_backward(dy);
  bias_backward_into(into, dy);
  return Tensor();
}

// dW and db of a linear layer with a bias: the two above, or, where both go
// into their buffers, one GEMM that writes the column sums of dy (the rows
// of dy'^T) as it reads them (matmul_into_with_row_sums: CUDA, opt-in).
std::pair<Tensor, Tensor> weight_and_bias_grads(const Variable& weight, const Variable& bias, const Tensor& dy,
                                                const Tensor& input) {
  const Destination w_into = claim_leaf_grad(weight, dy.dtype());
  const Destination b_into = claim_leaf_grad(bias, dy.dtype());
  if (w_into.defined() && b_into.defined() &&
      matmul_into_with_row_sums(w_into, as_rows(dy).transpose(0, 1), as_rows(input), b_into)) {
    return {};
  }
  Tensor dw = weight_grad_into(w_into, dy, input);
  return {dw, bias_grad_into(b_into, dy)};
}

}  // namespace

// y = a + b:  da = dy, db = dy
Variable add(const Variable& a, const Variable& b) {
  return make_result(sg::add(a.value(), b.value()), "add", {a, b},
                     [](const Tensor& dy) { return std::vector<Tensor>{dy, dy}; });
}

// y = a * b:  da = dy * b, db = dy * a
Variable mul(const Variable& a, const Variable& b) {
  return make_result(sg::mul(a.value(), b.value()), "mul", {a, b}, [a, b](const Tensor& dy) {
    return std::vector<Tensor>{sg::mul(dy, b.value()), sg::mul(dy, a.value())};
  });
}

// y = s x:  dx = s dy
Variable scale(const Variable& x, double factor) {
  return make_result(sg::scale(x.value(), factor), "scale", {x},
                     [factor](const Tensor& dy) { return std::vector<Tensor>{sg::scale(dy, factor)}; });
}

// A reshape moves no values: the gradient is dy read in the input's shape.
Variable reshape(const Variable& x, const Shape& shape) {
  Shape input_shape = x.shape();
  return make_result(x.value().reshape(shape), "reshape", {x},
                     [input_shape](const Tensor& dy) { return std::vector<Tensor>{dy.reshape(input_shape)}; });
}

// C = A B:  dA = dC B^T,  dB = A^T dC.
// With A (.., M, K) and B (K, N) the leading dims of A are rows of one big
// product, so dB sums over them: dB = A'^T dC' with A' (M', K), dC' (M', N).
// Transposes are views: matmul reads them in place.
Variable matmul(const Variable& a, const Variable& b) {
  return make_result(sg::matmul(a.value(), b.value()), "matmul", {a, b}, [a, b](const Tensor& dc) {
    Tensor x = a.value(), w = b.value();
    Tensor da = sg::matmul(dc, w.transpose(-1, -2));
    Tensor db = (w.dim() == 2 && x.dim() > 2) ? sg::matmul(as_rows(x).transpose(0, 1), as_rows(dc))
                                              : sg::matmul(x.transpose(-1, -2), dc);
    return std::vector<Tensor>{da, db};
  });
}

// y = x W^T + b with x (.., in), W (out, in):
//   dx = dy W   (.., in)      dW = dy'^T x'   (out, in)     db = sum over rows of dy
Variable linear(const Variable& x, const Variable& weight, const Variable& bias) {
  // Read in this order (the weight, then the bias): at ZeRO stage 3 the reads
  // drive the gather schedule, and weight and bias are in different groups.
  const Tensor input = x.value();
  const Tensor w = weight.value().transpose(0, 1);
  Tensor y = bias.defined() ? sg::matmul_bias(input, w, bias.value()) : sg::matmul(input, w);
  std::vector<Variable> inputs{x, weight};
  if (bias.defined()) inputs.push_back(bias);
  bool has_bias = bias.defined();
  return make_result(std::move(y), "linear", inputs, [x, weight, bias, has_bias](const Tensor& dy) {
    Tensor input = x.value(), w = weight.value();
    Tensor dx = sg::matmul(dy, w);
    if (!has_bias) return std::vector<Tensor>{dx, weight_grad(weight, dy, input)};
    auto [dw, db] = weight_and_bias_grads(weight, bias, dy, input);
    return std::vector<Tensor>{dx, dw, db};
  });
}

// y = gelu(x W^T + b), the first half of an MLP (h = x W^T + b is kept for
// backward):
//   dh = dy * gelu'(h)    dx = dh W    dW = dh'^T x'    db = sum over rows of dh
// On CUDA the GEMM adds the bias in its epilogue (cuBLASLt), and one pass
// over h writes y; elsewhere one pass adds the bias into h and writes y.
Variable linear_gelu(const Variable& x, const Variable& weight, const Variable& bias) {
  const Tensor input = x.value();
  const Tensor w = weight.value().transpose(0, 1);  // read before the bias, as in linear()
  Tensor h, y;
  if (input.device().is_cuda()) {
    h = sg::matmul_bias(input, w, bias.value());
    y = sg::gelu(h);
  } else {
    h = sg::matmul(input, w);
    y = sg::bias_gelu_(h, bias.value());  // h becomes x W^T + b
  }
  return make_result(std::move(y), "linear_gelu", {x, weight, bias}, [x, weight, bias, h](const Tensor& dy) {
    BiasGeluGrads g = sg::bias_gelu_backward(h, dy, claim_leaf_grad(bias, dy.dtype()));
    Tensor input = x.value(), w = weight.value();
    return std::vector<Tensor>{sg::matmul(g.dh, w), weight_grad(weight, g.dh, input), g.dbias};
  });
}

// An MLP, y = gelu(h) W2^T + b2 with h = x W1^T + b1, as one node, so that
// its backward can fold GELU's derivative into the GEMM that makes h's
// gradient (cuBLASLt's DGELU epilogue, as its forward folds the bias and
// GELU into the first GEMM's: sg::matmul_bias_gelu, SG_GEMM_GELU_EPILOGUE=1;
// then db1, like db2, can come out of its weight's GEMM too):
//   dW2 = dy'^T a'    db2 = colsum dy    dh = (dy W2) * gelu'(h)
//   dW1 = dh'^T x'    db1 = colsum dh    dx = dh W1           (a = gelu(h))
// Without the epilogues these are linear_gelu's and linear's ops in their
// order, so the result is the same bits as the two nodes'. Parameters are
// read (a ZeRO-3 gather each) and their gradients claimed in the two
// nodes' order too, and the inputs' order gives the same order of their
// gradients' hooks: W1, b1, W2, b2 go in the reverse order.
Variable mlp(const Variable& x, const Variable& fc_weight, const Variable& fc_bias, const Variable& proj_weight,
             const Variable& proj_bias) {
  SG_CHECK(fc_bias.defined() && proj_bias.defined(), "mlp: both linears need a bias (use linear_gelu and linear ",
           "for ones without)");
  const Tensor input = x.value();
  const Tensor w1 = fc_weight.value().transpose(0, 1);  // the weight, then the bias: as linear()
  LinearGeluOutput first = sg::matmul_bias_gelu(input, w1, fc_bias.value());
  const Tensor w2 = proj_weight.value().transpose(0, 1);
  Tensor y = sg::matmul_bias(first.y, w2, proj_bias.value());
  auto backward = [x, fc_weight, fc_bias, proj_weight, proj_bias, a = first.y, h = first.h](const Tensor& dy) {
    const Tensor w2 = proj_weight.value();
    Tensor dh = sg::matmul_gelu_backward(dy, w2, h);
    // fused: dh came out of c_proj's dx GEMM (DGELU), and db1 comes with dW1 (or from a pass over dh).
    const bool fused = dh.defined();
    const Tensor da = fused ? Tensor() : sg::matmul(dy, w2);
    auto [dw2, db2] = weight_and_bias_grads(proj_weight, proj_bias, dy, a);
    Tensor db1;
    if (!fused) {
      BiasGeluGrads g = sg::bias_gelu_backward(h, da, claim_leaf_grad(fc_bias, da.dtype()));
      dh = g.dh, db1 = g.dbias;
    }
    const Tensor w1 = fc_weight.value(), dx = sg::matmul(dh, w1);
    if (!fused) return std::vector<Tensor>{dx, weight_grad(fc_weight, dh, x.value()), db1, dw2, db2};
    auto [dw1, db1_fused] = weight_and_bias_grads(fc_weight, fc_bias, dh, x.value());
    return std::vector<Tensor>{dx, dw1, db1_fused, dw2, db2};
  };
  return make_result(std::move(y), "mlp", {x, fc_weight, fc_bias, proj_weight, proj_bias}, backward);
}

// loss = cross_entropy(x W^T, targets), the LM head and the loss as one
// node that owns the logits (N, V): nothing else can read them, so backward
// writes dlogits over them (unless the graph is retained) and the largest
// activation of a GPT step is never held twice, as in llm.c.
//   dlogits = dloss/n (softmax - onehot)    dx = dlogits W    dW = dlogits'^T x'
// On CUDA the forward goes further (SG_FUSED_CROSS_ENTROPY=0 turns it off):
// one kernel writes g = softmax - onehot over the logits while it finds the
// losses, so they cross memory once each way instead of being read again in
// backward, and backward applies s = dloss/n where the tensors are small:
//   dx = s (g W)    dW = g^T (s x)      (N x C each, against g's N x V)
Variable linear_cross_entropy(const Variable& x, const Variable& weight, const Tensor& targets) {
  const Tensor input = x.value();
  Tensor logits = sg::matmul(input, weight.value().transpose(0, 1));
  if (logits.device().is_cuda() && env_switch_on("SG_FUSED_CROSS_ENTROPY")) {
    CrossEntropyWithGrad out = sg::cross_entropy_with_grad(logits, targets);
    logits = Tensor();  // given up: out.grad holds g in its buffer
    CrossEntropyMean mean = sg::cross_entropy_mean(out.losses, targets);
    auto backward = [x, weight, g = out.grad, count = mean.count](const Tensor& dloss) {
      Tensor input = x.value(), w = weight.value();
      return std::vector<Tensor>{sg::scale_by_quotient(sg::matmul(g, w), dloss, count),
                                 weight_grad(weight, g, sg::scale_by_quotient(input, dloss, count))};
    };
    return make_result(mean.loss, "linear_cross_entropy", {x, weight}, backward);
  }
  CrossEntropyOutput out = sg::cross_entropy(logits, targets);
  CrossEntropyMean mean = sg::cross_entropy_mean(out.losses, targets);
  Tensor lse = out.lse, count = mean.count;
  auto backward = [x, weight, logits, lse, targets, count](const Tensor& dloss) {
    Tensor dlogits =
        sg::cross_entropy_mean_backward(dloss, count, logits, lse, targets, backward_frees_saved_tensors());
    Tensor input = x.value(), w = weight.value();
    return std::vector<Tensor>{sg::matmul(dlogits, w), weight_grad(weight, dlogits, input)};
  };
  return make_result(mean.loss, "linear_cross_entropy", {x, weight}, backward);
}

// y = gelu(x):  dx = dy * gelu'(x)  (kernels/cpu/elementwise.h)
Variable gelu(const Variable& x) {
  return make_result(sg::gelu(x.value()), "gelu", {x},
                     [x](const Tensor& dy) { return std::vector<Tensor>{sg::gelu_backward(x.value(), dy)}; });
}

// y = softmax(x):  dx = y * (dy - sum(dy * y))  (per row)
Variable softmax(const Variable& x) {
  Tensor y = sg::softmax(x.value());
  return make_result(y, "softmax", {x},
                     [y](const Tensor& dy) { return std::vector<Tensor>{sg::softmax_backward(y, dy)}; });
}

namespace {

// LayerNorm's node: saved input x (the tensor itself: add_layernorm's sum;
// through its Variable: layernorm's, which ZeRO-3 may have to gather),
// mean and rstd. Its backward can take in x's gradient from elsewhere (the
// residual stream's) and add it in the same kernel (Node::backward_adding).
template <typename SavedInput>
Variable layernorm_node(const Tensor& out, const Variable& x, const Variable& weight, const Variable& bias,
                        SavedInput saved, const Tensor& mean, const Tensor& rstd) {
  auto rule = [saved, weight, bias, mean, rstd](const Tensor& dy, const Tensor& already) {
    const Tensor w = weight.value();  // read before the claims: at ZeRO-3 this gathers
    LayerNormGrads g = sg::layernorm_backward(dy, saved(), w, mean, rstd, already,
                                              claim_leaf_grad(weight, dy.dtype()), claim_leaf_grad(bias, dy.dtype()));
    return std::vector<Tensor>{g.dx, g.dweight, g.dbias};
  };
  Variable y = make_result(out, "layernorm", {x, weight, bias}, [rule](const Tensor& dy) { return rule(dy, Tensor()); });
  if (y.state()->grad_fn) y.state()->grad_fn->backward_adding = rule;
  return y;
}

}  // namespace

// LayerNorm saves its input and the per-row mean and rstd; the backward
// formula is in kernels/cpu/normalization.h.
Variable layernorm(const Variable& x, const Variable& weight, const Variable& bias) {
  LayerNormOutput out = sg::layernorm(x.value(), weight.value(), bias.value());
  return layernorm_node(out.out, x, weight, bias, [x] { return x.value(); }, out.mean, out.rstd);
}

// Two tape entries from one kernel: the sum (backward: the gradient to both
// inputs) and the LayerNorm of it (backward: as layernorm's, on the sum).
std::pair<Variable, Variable> add_layernorm(const Variable& x, const Variable& y, const Variable& weight,
                                            const Variable& bias) {
  const Tensor w = weight.value();
  AddLayerNormOutput out = sg::add_layernorm(x.value(), y.value(), w, bias.value());
  Variable sum = make_result(out.sum, "add", {x, y}, [](const Tensor& dy) { return std::vector<Tensor>{dy, dy}; });
  const Tensor saved = out.sum;
  Variable norm = layernorm_node(out.norm.out, sum, weight, bias, [saved] { return saved; }, out.norm.mean,
                                 out.norm.rstd);
  return {sum, norm};
}

namespace {

AttentionForm form_from_environment() {
  const char* setting = std::getenv("SG_ATTENTION");
  const std::string form = setting ? setting : "auto";
  if (form == "naive") return AttentionForm::naive;
  if (form == "gemm") return AttentionForm::gemm;
  if (form == "fused") return AttentionForm::fused;
  SG_CHECK(form == "auto", "SG_ATTENTION must be auto, naive, gemm or fused, got '", form, "'");
  return AttentionForm::automatic;
}

// set_attention_form's choice, over SG_ATTENTION (read at each call, so
// one process can time both forms: bench_gpt --variants).
std::optional<AttentionForm> g_attention_form;

}  // namespace

void set_attention_form(AttentionForm form) { g_attention_form = form; }

Variable attention(const Variable& qkv, int64_t n_head) {
  switch (g_attention_form ? *g_attention_form : form_from_environment()) {
    case AttentionForm::naive: return naive_attention(qkv, n_head);
    case AttentionForm::gemm: return gemm_attention(qkv, n_head);
    case AttentionForm::fused: return fused_attention(qkv, n_head);
    case AttentionForm::automatic: break;
  }
  const Tensor x = qkv.value();
  if (!x.device().is_cuda() || x.dim() != 3 || n_head < 1 || x.size(2) % (3 * n_head) != 0) {
    return naive_attention(qkv, n_head);  // (which also reports bad shapes)
  }
  switch (automatic_attention_form(true, fused_attention_on_tensor_cores(x, n_head), x.dtype(), x.size(0), x.size(1),
                                   x.size(2) / 3, n_head)) {
    case AttentionForm::gemm: return gemm_attention(qkv, n_head);
    case AttentionForm::fused: return fused_attention(qkv, n_head);
    default: return naive_attention(qkv, n_head);
  }
}

// On a GPU: the fused kernels on tensor cores where they apply (16-bit,
// head sizes 16-64), which keep no (T, T) matrix; else batched GEMMs on
// tensor cores while the probabilities they keep for backward stay small;
// else the fused kernels on CUDA cores (O(T) memory). Measured on an H100
// at GPT-2 124M's shape in bf16 (docs/performance.md, run 5), a layer's
// forward and backward took 0.68 ms fused on tensor cores, 0.88 ms as GEMMs,
// and a training step 22.8 ms against 25.2.
AttentionForm automatic_attention_form(bool cuda, bool tensor_cores, DType dtype, int64_t B, int64_t T, int64_t C,
                                       int64_t n_head) {
  if (!cuda) return AttentionForm::naive;
  if (tensor_cores) return AttentionForm::fused;
  const int64_t probability_bytes = B * n_head * T * T * int64_t(dtype_size(dtype));
  if (probability_bytes <= kGemmAttentionMaxBytes) return AttentionForm::gemm;
  if (C / n_head <= kFusedAttentionMaxHeadSize) return AttentionForm::fused;
  return AttentionForm::naive;
}

// Attention as batched GEMMs: saves qkv and P, like the naive form; the
// backward formula is at gemm_attention_backward (tensor/ops_attention.cpp).
Variable gemm_attention(const Variable& qkv, int64_t n_head) {
  AttentionOutput out = sg::gemm_attention(qkv.value(), n_head);
  Tensor att = out.att;
  return make_result(out.out, "gemm_attention", {qkv}, [qkv, att, n_head](const Tensor& dy) {
    return std::vector<Tensor>{sg::gemm_attention_backward(dy, qkv.value(), att, n_head)};
  });
}

// Naive attention saves qkv and the (B, NH, T, T) probabilities; the
// backward formula is in kernels/cpu/attention.h.
Variable naive_attention(const Variable& qkv, int64_t n_head) {
  AttentionOutput out = sg::attention(qkv.value(), n_head);
  Tensor att = out.att;
  return make_result(out.out, "attention", {qkv}, [qkv, att, n_head](const Tensor& dy) {
    return std::vector<Tensor>{sg::attention_backward(dy, qkv.value(), att, n_head)};
  });
}

// Fused attention saves qkv, its output and each row's log-sum-exp; the
// backward recomputes the probabilities (kernels/cpu/flash_attention.h).
Variable fused_attention(const Variable& qkv, int64_t n_head) {
  FusedAttentionOutput out = sg::fused_attention(qkv.value(), n_head);
  Tensor y = out.out, lse = out.lse;
  return make_result(out.out, "fused_attention", {qkv}, [qkv, y, lse, n_head](const Tensor& dy) {
    return std::vector<Tensor>{sg::fused_attention_backward(dy, qkv.value(), y, lse, n_head)};
  });
}

// y[n] = table[ids[n]]:  dtable[v] = sum of dy[n] over the n with ids[n] = v
Variable embedding(const Variable& table, const Tensor& ids) {
  int64_t vocab = table.size(0);
  return make_result(sg::embedding(table.value(), ids), "embedding", {table}, [table, ids, vocab](const Tensor& dy) {
    const Destination into = claim_leaf_grad(table, dy.dtype());  // the rows the ids name, added into the buffer
    if (!into.defined()) return std::vector<Tensor>{sg::embedding_backward(dy, ids, vocab)};
    sg::embedding_backward_into(into, dy, ids);
    return std::vector<Tensor>{Tensor()};
  });
}

// loss = (1/n) sum over counted rows of (logsumexp(x) - x[target]), n = rows
// with target >= 0:  dlogits = dloss/n * (softmax(x) - onehot(target)).
// The mean and n stay on the logits' device; so does dloss in backward.
// The loss is f32 for 16-bit logits (f64 for f64), as under PyTorch's
// autocast: a bf16 loss would log only three digits. (fp16's loss scale is
// applied to the backward's seed in f32 whatever the loss's dtype: optim/zero.cpp.)
Variable cross_entropy(const Variable& logits, const Tensor& targets) {
  Tensor x = logits.value();
  CrossEntropyOutput out = sg::cross_entropy(x, targets);
  CrossEntropyMean mean = sg::cross_entropy_mean(out.losses, targets);
  Tensor lse = out.lse, count = mean.count;
  return make_result(mean.loss, "cross_entropy", {logits}, [x, lse, targets, count](const Tensor& dloss) {
    return std::vector<Tensor>{sg::cross_entropy_mean_backward(dloss, count, x, lse, targets)};
  });
}

// y = sum(x):  dx = dy everywhere
Variable sum(const Variable& x) {
  Shape shape = x.shape();
  TensorOptions options = TensorOptions().dtype(x.dtype()).device(x.device());
  return make_result(sg::sum(x.value()).to(x.dtype()), "sum", {x}, [shape, options](const Tensor& dy) {
    return std::vector<Tensor>{Tensor::full(shape, dy.item(), options)};
  });
}

// y = mean(x):  dx = dy / numel everywhere
Variable mean(const Variable& x) { return scale(sum(x), 1.0 / double(x.numel())); }

}  // namespace sg
