// ZeroOptimizer's collectives: when each group's reduction starts (in one
// fixed order), and one collective per bucket of shard groups (DeepSpeed's
// reduce_bucket_size and allgather_bucket_size). A bucket of one group moves
// the group's own buffers, with no copy. A bucket of several is packed into
// one buffer first. For a reduce-scatter or an all-gather the packing is
// rank-major, so that rank r's part of the packed buffer is its slice of
// every group, back to back:
//
//   packed = [ g1 slice 0 | g2 slice 0 | g1 slice 1 | g2 slice 1 | ... ]
//
// Fewer, larger collectives cost fewer latencies; the price is the copies
// and a wait for the bucket to fill before its reduction can start.
#include "optim/zero.h"

#include "tensor/ops.h"

namespace sg {
namespace {

Tensor comm_buffer(int64_t n, DType dtype, Device device) {
  return Tensor::empty({n}, TensorOptions().dtype(dtype).device(device).category(MemoryCategory::communication));
}

// flats[i] is a padded flat buffer of world * slices[i] elements; the
// packed copy is of `dtype` (the reduction's).
Tensor pack_rank_major(const std::vector<Tensor>& flats, const std::vector<int64_t>& slices, int world, DType dtype) {
  int64_t row = 0;  // one rank's part of the packed buffer
  for (int64_t s : slices) row += s;
  Tensor packed = comm_buffer(row * world, dtype, flats.front().device());
  for (int r = 0; r < world; ++r) {
    int64_t at = r * row;
    for (size_t i = 0; i < flats.size(); ++i) {
      packed.slice(0, at, at + slices[i]).copy_(flats[i].slice(0, r * slices[i], (r + 1) * slices[i]));
      at += slices[i];
    }
  }
  return packed;
}

void unpack_rank_major(const Tensor& packed, std::vector<Tensor>& flats, const std::vector<int64_t>& slices, int world) {
  const int64_t row = packed.numel() / world;
  for (int r = 0; r < world; ++r) {
    int64_t at = r * row;
    for (size_t i = 0; i < flats.size(); ++i) {
      flats[i].slice(0, r * slices[i], (r + 1) * slices[i]).copy_(packed.slice(0, at, at + slices[i]));
      at += slices[i];
    }
  }
}

}  // namespace

// Reductions start in one fixed order, the groups' reverse order (roughly
// the order backward completes them), never in the order gradients happen
// to arrive: with a branch taken on one rank and not on another, arrival
// differs between ranks, and every rank must issue the same collectives in
// the same order. A group that is ready waits for the groups before it.
void ZeroOptimizer::launch_ready_in_order() {
  while (launched_ < groups_.size()) {
    const size_t g = groups_.size() - 1 - launched_;
    if (pending_[g] > 0) return;
    launch_reduction(g);
    ++launched_;
  }
}

// Group g's gradients are complete: it joins the bucket, which is reduced
// once it holds reduce_bucket elements (at once when that is 0).
void ZeroOptimizer::launch_reduction(size_t g) {
  // Stages 0-1 reduce the flat buffer itself: a view no backward wrote this
  // step holds leftovers until it is zeroed.
  if (options_.stage < 2) groups_[g].zero_unwritten_grads();
  if (options_.stage >= 1 && !grad_shards_[g].defined()) {
    grad_shards_[g] = Tensor::zeros({groups_[g].shard_size()}, groups_[g].options(MemoryCategory::gradient));
  }
  bucket_.push_back(g);
  bucket_elements_ += groups_[g].padded();
  if (bucket_elements_ >= options_.reduce_bucket) flush_reductions();
}

void ZeroOptimizer::flush_reductions() {
  if (bucket_.empty()) return;
  reduce_bucket(bucket_);
  bucket_.clear();
  bucket_elements_ = 0;
}

void ZeroOptimizer::wait_all() {
  for (WorkHandle& work : in_flight_) work->wait();
  in_flight_.clear();
  for (auto& finish : after_wait_) finish();
  after_wait_.clear();
}

// Gradients accumulate in f32; the collective runs in reduce_dtype (a
// converted copy when that is bf16/f16), and the result lands in f32 again.
// A world of one communicates nothing, so it keeps f32: no round trip
// through 16 bits (for GPT-2 on one GPU, 1.5 GB of casts a step, and the
// rounding) for a collective that moves no byte.
void ZeroOptimizer::reduce_bucket(const std::vector<size_t>& bucket) {
  const int world = comm_.world_size();
  const DType reduce = world == 1 ? DType::f32 : options_.reduce_dtype;
  if (options_.stage == 0) {
    if (bucket.size() == 1 && reduce == DType::f32) {
      in_flight_.push_back(comm_.all_reduce(groups_[bucket[0]].flat_grads(), ReduceOp::average));
      return;
    }
    std::vector<Tensor> flats;
    int64_t total = 0;
    for (size_t g : bucket) flats.push_back(groups_[g].flat_grads()), total += flats.back().numel();
    Tensor packed = comm_buffer(total, reduce, flats.front().device());
    int64_t at = 0;
    for (const Tensor& flat : flats) packed.slice(0, at, at + flat.numel()).copy_(flat), at += flat.numel();
    in_flight_.push_back(comm_.all_reduce(packed, ReduceOp::average));
    after_wait_.push_back([packed, flats]() mutable {
      int64_t from = 0;
      for (Tensor& flat : flats) flat.copy_(packed.slice(0, from, from + flat.numel())), from += flat.numel();
    });
    return;
  }
  if (options_.stage == 1 && bucket.size() == 1 && reduce == DType::f32) {  // straight into the rank's gradient slice
    ShardGroup& group = groups_[bucket[0]];
    in_flight_.push_back(comm_.reduce_scatter(grad_shards_[bucket[0]], group.flat_grads(), ReduceOp::average));
    return;
  }
  // The full gradients of each group: stage 1 keeps them in flat buffers;
  // stages 2-3 pack this micro-batch's and free the parameters' own.
  std::vector<Tensor> full, shards;
  std::vector<int64_t> slices;
  int64_t row = 0;
  for (size_t g : bucket) {
    ShardGroup& group = groups_[g];
    if (options_.stage == 1) {
      full.push_back(group.flat_grads());
    } else {
      full.push_back(group.pack_grads(MemoryCategory::communication, reduce));
      for (const GroupParameter& p : group.params()) Variable(p.variable).zero_grad();
    }
    shards.push_back(grad_shards_[g]);
    slices.push_back(group.shard_size());
    row += group.shard_size();
  }
  Tensor input = bucket.size() == 1 && full[0].dtype() == reduce ? full[0] : pack_rank_major(full, slices, world, reduce);
  Tensor mine = comm_buffer(row, reduce, groups_[bucket[0]].device());
  in_flight_.push_back(comm_.reduce_scatter(mine, input, ReduceOp::average));
  const bool add = options_.stage >= 2;  // stages 2-3 accumulate over micro-batches
  after_wait_.push_back([mine, shards, slices, add]() mutable {
    int64_t at = 0;
    for (size_t i = 0; i < shards.size(); ++i) {
      Tensor piece = mine.slice(0, at, at + slices[i]);
      if (add) {
        axpy_(shards[i], 1.0, piece);  // a bf16/f16 reduction is read as it is
      } else {
        shards[i].copy_(piece);
      }
      at += slices[i];
    }
  });
}

// Stages 1-2 after the optimizer step: every rank's updated slices of the
// bucket's groups gathered into every rank's full parameters.
void ZeroOptimizer::gather_updated_slices(const std::vector<size_t>& bucket) {
  if (bucket.size() == 1) {
    ShardGroup& group = groups_[bucket[0]];
    // A copy of the slice: MPI may not read and write one buffer in one call.
    Tensor mine = group.my_slice(group.flat_params()).with_category(MemoryCategory::communication);
    in_flight_.push_back(comm_.all_gather(group.flat_params(), mine));
    return;
  }
  std::vector<Tensor> flats;
  std::vector<int64_t> slices;
  int64_t row = 0;
  for (size_t g : bucket) {
    flats.push_back(groups_[g].flat_params());
    slices.push_back(groups_[g].shard_size());
    row += slices.back();
  }
  const DType dtype = groups_[bucket[0]].dtype();  // the parameters' (bf16/f16 under mixed precision)
  Tensor mine = comm_buffer(row, dtype, groups_[bucket[0]].device());
  int64_t at = 0;
  for (size_t i = 0; i < bucket.size(); ++i) {
    mine.slice(0, at, at + slices[i]).copy_(groups_[bucket[i]].my_slice(flats[i]));
    at += slices[i];
  }
  Tensor packed = comm_buffer(row * comm_.world_size(), dtype, groups_[bucket[0]].device());
  in_flight_.push_back(comm_.all_gather(packed, mine));
  const int world = comm_.world_size();
  after_wait_.push_back([packed, flats, slices, world]() mutable { unpack_rank_major(packed, flats, slices, world); });
}

}  // namespace sg
