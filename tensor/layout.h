// Layout: a tensor's global (logical) shape and its placement across ranks.
//
// A placement is either Replicated (every rank holds all elements) or Sharded.
// A sharded tensor is cut along its *flattened* element range, the way ZeRO
// partitions parameters: with numel elements over `world` ranks, the range is
// padded up to `padded` (a multiple of world), and rank r owns the slice
//
//   [r * S, (r + 1) * S)   with  S = padded / world   (its shard size),
//
// of which [begin, end) are real elements and the rest (only on the last
// ranks) is zero padding. Every rank's buffer has the same S elements, which is
// what all-gather and reduce-scatter need.
//
//   f32[2304@dp/4, 768]   a (2304, 768) tensor sharded over 4 data-parallel ranks
//
// Read next: tensor/tensor.h.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "kernels/dtype.h"

namespace sg {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& shape);
std::string shape_str(const Shape& shape);  // "[2, 3]"

struct Replicated {
  bool operator==(const Replicated&) const = default;
};

struct Sharded {
  int rank = 0;
  int world = 1;
  int64_t begin = 0;   // first global flat index held here
  int64_t end = 0;     // one past the last real element held here
  int64_t padded = 0;  // numel rounded up to a multiple of world (times the alignment)

  int64_t shard_size() const { return padded / world; }  // elements in every rank's buffer (0 when released)
  bool operator==(const Sharded&) const = default;
};

using Placement = std::variant<Replicated, Sharded>;

class Layout {
 public:
  Layout() = default;
  static Layout replicated(Shape global_shape);

  // Cuts the flattened range of `global_shape` over `world` ranks. `align`
  // rounds each shard up to a multiple of `align` elements (e.g. so that bf16
  // shards stay 16-byte aligned); 1 means pad only to a multiple of world.
  static Layout sharded(Shape global_shape, int rank, int world, int64_t align = 1);

  // A sharded tensor that holds no elements here: a ZeRO-3 parameter whose
  // values live in its shard group (dist/shard_group.h) until gathered.
  static Layout released(Shape global_shape, int rank, int world);
  bool is_released() const { return is_sharded() && shard().padded == 0; }

  const Shape& global_shape() const { return global_shape_; }
  const Placement& placement() const { return placement_; }
  int64_t global_numel() const { return shape_numel(global_shape_); }
  bool is_sharded() const { return std::holds_alternative<Sharded>(placement_); }
  const Sharded& shard() const;  // throws for a replicated layout

  // Elements this rank stores: numel when replicated, the shard size when sharded.
  int64_t local_numel() const;
  bool holds(int64_t flat_index) const;

  // "f32[2304@dp/4, 768]"
  std::string str(DType dtype) const;

  bool operator==(const Layout&) const = default;

 private:
  Shape global_shape_;
  Placement placement_ = Replicated{};
};

}  // namespace sg
