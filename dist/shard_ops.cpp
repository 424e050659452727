#include "dist/shard_ops.h"

namespace sg {

Tensor gather_shards(Communicator& comm, const Tensor& shard, MemoryCategory category) {
  SG_CHECK(shard.is_sharded(), "gather_shards: ", shard.str(), " is not sharded");
  const Sharded& s = shard.layout().shard();
  SG_CHECK(s.world == comm.world_size() && s.rank == comm.rank(), "gather_shards: ", shard.str(), " is rank ", s.rank,
           " of ", s.world, " but this communicator is rank ", comm.rank(), " of ", comm.world_size());
  TensorOptions options = TensorOptions().dtype(shard.dtype()).device(shard.device()).category(category);
  Tensor padded = Tensor::empty({s.padded}, options);  // every rank's shard, padding included
  Tensor local = shard.local();
  comm.all_gather(padded, local)->wait();
  return padded.slice(0, 0, shard.numel()).view(shard.shape());
}

Tensor reduce_scatter_to_shard(Communicator& comm, const Tensor& full, const Layout& layout, ReduceOp op) {
  SG_CHECK(layout.is_sharded(), "reduce_scatter_to_shard: the target layout must be sharded");
  const Sharded& s = layout.shard();
  SG_CHECK(s.world == comm.world_size() && s.rank == comm.rank(), "reduce_scatter_to_shard: the layout is rank ",
           s.rank, " of ", s.world, " but this communicator is rank ", comm.rank(), " of ", comm.world_size());
  SG_CHECK(!full.is_sharded() && full.shape() == layout.global_shape(), "reduce_scatter_to_shard: ", full.str(),
           " does not have the layout's global shape ", shape_str(layout.global_shape()));
  TensorOptions options = TensorOptions().dtype(full.dtype()).device(full.device());
  Tensor padded = Tensor::zeros({s.padded}, options.category(MemoryCategory::communication));
  padded.slice(0, 0, full.numel()).copy_(full.reshape({full.numel()}));
  Tensor shard = Tensor::empty_with(layout, options.category(MemoryCategory::gradient));
  Tensor local = shard.local();
  comm.reduce_scatter(local, padded, op)->wait();
  return shard;
}

}  // namespace sg
