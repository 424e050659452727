// CPU embedding lookup and cross-entropy: the two ends of a language model.
//
// Read next: kernels/cpu/reduce.h.
#pragma once

#include <cstdint>

namespace sg::cpu {

// out[n, :] = table[ids[n], :].   out: (N, C)   table: (V, C)   ids: (N)
template <typename T>
void embedding_forward(T* out, const T* table, const int32_t* ids, int64_t N, int64_t C);

// dtable[ids[n], :] += dout[n, :]. A scatter-add: a token seen twice in the
// batch receives both gradients.
template <typename T>
void embedding_backward(T* dtable, const T* dout, const int32_t* ids, int64_t N, int64_t C);

// Cross-entropy of each row of logits (N, V) against its target class:
//   loss[n] = logsumexp(logits[n, :]) - logits[n, target[n]]
// lse[n] (the logsumexp) is saved so the backward never stores the softmax.
// A negative target means "ignore this row": loss 0 and no gradient
// (PyTorch's ignore_index, used for padding).
template <typename T>
void cross_entropy_forward(T* losses, T* lse, const T* logits, const int32_t* targets,
                           int64_t N, int64_t V);

// dlogits[n, j] = dloss[n] * (softmax(logits[n])_j - [j == target[n]]),
// with softmax_j = exp(logits_j - lse); 0 for rows with target < 0. One
// pass, recomputing the softmax; dlogits may be logits itself (each element
// is read before it is written, by the same thread).
template <typename T>
void cross_entropy_backward(T* dlogits, const T* dlosses, const T* logits, const T* lse,
                            const int32_t* targets, int64_t N, int64_t V);

}  // namespace sg::cpu
