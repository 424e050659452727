// Collectives on sharded tensors, where the Layout says everything: the
// padded flat range and each rank's slice of it (tensor/layout.h).
//
//   Tensor full  = gather_shards(comm, shard);                 // every rank: the whole tensor
//   Tensor shard = reduce_scatter_to_shard(comm, full, layout);  // this rank: its slice of the sum
//
// Sizes that do not divide by the world are the normal case: the padding of
// the layout makes every rank's slice the same length, as the collectives
// need, and the padding is dropped again on the way back.
#pragma once

#include "dist/communicator.h"

namespace sg {

// All-gathers the shards of `shard` (this rank's Sharded tensor) into a
// replicated tensor of the global shape.
Tensor gather_shards(Communicator& comm, const Tensor& shard, MemoryCategory category = MemoryCategory::communication);

// Reduce-scatters the replicated `full` (every rank's contribution, of
// `layout`'s global shape) into this rank's shard of `layout`.
Tensor reduce_scatter_to_shard(Communicator& comm, const Tensor& full, const Layout& layout, ReduceOp op = ReduceOp::sum);

}  // namespace sg
