// Reproducible random fills keyed by (seed, tensor name, global element index).
//
// The generator is Philox 4x32-10 (kernels/philox.h), counter-based: element
// i's value is a pure function of (seed, hash(name), i). Consequences:
//   * a shard filled on its own equals the same slice of the full tensor, so
//     ZeRO-3 ranks initialize only their shards and agree with one process;
//   * CPU and CUDA fills give the same bits (same code, compiled twice);
//   * renaming a tensor changes its values; adding another tensor does not.
//
// Read next: tensor/ops.h.
#pragma once

#include <cstdint>
#include <string_view>

#include "tensor/tensor.h"

namespace sg {

// FNV-1a 64-bit hash of the name: the Philox stream of that tensor.
uint64_t rng_stream(std::string_view name);

// Fill every element this rank holds (padding of a shard stays zero).
void fill_uniform_(Tensor& tensor, uint64_t seed, std::string_view name, double low = 0.0, double high = 1.0);
void fill_normal_(Tensor& tensor, uint64_t seed, std::string_view name, double mean = 0.0, double std = 1.0);

// Fills a 1-D contiguous f32 buffer with elements [first_index, first_index + n)
// of the tensor `name`: any piece of a tensor, filled on its own, gets the
// values the whole tensor would have there (ZeRO-3 builds its shards this way).
void fill_normal_range_(Tensor& values, uint64_t seed, std::string_view name, int64_t first_index, double mean,
                        double std);

}  // namespace sg
