#include "tensor/layout.h"

#include <algorithm>
#include <sstream>

#include "kernels/error.h"

namespace sg {

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t size : shape) n *= size;
  return n;
}

std::string shape_str(const Shape& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t d = 0; d < shape.size(); ++d) out << (d ? ", " : "") << shape[d];
  out << "]";
  return out.str();
}

Layout Layout::replicated(Shape global_shape) {
  for (int64_t size : global_shape) {
    SG_CHECK(size >= 0, "a shape cannot have a negative size: ", shape_str(global_shape));
  }
  Layout layout;
  layout.global_shape_ = std::move(global_shape);
  return layout;
}

Layout Layout::sharded(Shape global_shape, int rank, int world, int64_t align) {
  SG_CHECK(world >= 1, "a sharded layout needs world >= 1, got ", world);
  SG_CHECK(rank >= 0 && rank < world, "rank ", rank, " is outside the world of ", world, " ranks");
  SG_CHECK(align >= 1, "shard alignment must be >= 1 element, got ", align);
  Layout layout = replicated(std::move(global_shape));
  int64_t numel = layout.global_numel();
  int64_t unit = int64_t(world) * align;
  Sharded shard;
  shard.rank = rank;
  shard.world = world;
  shard.padded = (numel + unit - 1) / unit * unit;
  int64_t size = shard.shard_size();
  shard.begin = std::min(int64_t(rank) * size, numel);
  shard.end = std::min(int64_t(rank + 1) * size, numel);
  layout.placement_ = shard;
  return layout;
}

Layout Layout::released(Shape global_shape, int rank, int world) {
  Layout layout = sharded(std::move(global_shape), rank, world);
  Sharded shard = layout.shard();
  shard.begin = shard.end = shard.padded = 0;
  layout.placement_ = shard;
  return layout;
}

const Sharded& Layout::shard() const {
  SG_CHECK(is_sharded(), "this tensor is replicated, not sharded; check is_sharded() first");
  return std::get<Sharded>(placement_);
}

int64_t Layout::local_numel() const { return is_sharded() ? shard().shard_size() : global_numel(); }

bool Layout::holds(int64_t flat_index) const {
  if (!is_sharded()) return flat_index >= 0 && flat_index < global_numel();
  return flat_index >= shard().begin && flat_index < shard().end;
}

std::string Layout::str(DType dtype) const {
  std::ostringstream out;
  out << dtype_name(dtype) << "[";
  for (size_t d = 0; d < global_shape_.size(); ++d) {
    out << (d ? ", " : "") << global_shape_[d];
    if (d == 0 && is_sharded()) out << "@dp/" << shard().world;
  }
  if (global_shape_.empty() && is_sharded()) out << "@dp/" << shard().world;
  out << "]";
  return out.str();
}

}  // namespace sg
