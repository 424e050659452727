#include "dist/shard_group.h"

#include <algorithm>

namespace sg {

// Offsets and the flat layout, shared by both constructors.
void ShardGroup::place(std::vector<std::pair<std::string, Variable>> params, int rank, int world, int64_t align) {
  SG_CHECK(!params.empty(), "shard group '", name_, "' has no parameters");
  int64_t offset = 0;
  device_ = params.front().second.data().device();
  for (auto& [param_name, variable] : params) {
    SG_CHECK(variable.data().device() == device_, "shard group '", name_, "': ", param_name, " is on ",
             variable.data().device().str(), ", the group's other parameters on ", device_.str());
    SG_CHECK(variable.dtype() == DType::f32, "shard group '", name_, "': ", param_name, " must be f32, got ",
             variable.data().str());
    params_.push_back({param_name, variable, offset, variable.numel()});
    offset += variable.numel();
  }
  layout_ = Layout::sharded({offset}, rank, world, align);
}

ShardGroup ShardGroup::born_partitioned(std::string name, std::vector<std::pair<std::string, Variable>> params,
                                        const std::vector<SliceInitializer>& initializers, int rank, int world,
                                        int64_t align) {
  SG_CHECK(initializers.size() == params.size(), "born_partitioned: one initializer per parameter");
  ShardGroup group;
  group.name_ = std::move(name);
  group.place(std::move(params), rank, world, align);
  // This rank's slice covers flat [start, start + S); each parameter fills its overlap.
  const int64_t size = group.shard_size(), start = int64_t(rank) * size;
  group.flat_shard_ = Tensor::zeros({size}, group.options(MemoryCategory::parameter));
  for (size_t i = 0; i < group.params_.size(); ++i) {
    const GroupParameter& p = group.params_[i];
    const int64_t begin = std::max(p.offset, start), end = std::min(p.offset + p.numel, start + size);
    if (begin >= end) continue;
    Tensor piece = group.flat_shard_.slice(0, begin - start, end - start);
    initializers[i](piece, begin - p.offset);
  }
  group.release();
  return group;
}

ShardGroup::ShardGroup(std::string name, std::vector<std::pair<std::string, Variable>> params, int rank, int world,
                       int64_t align)
    : name_(std::move(name)) {
  for (auto& [param_name, variable] : params) {
    SG_CHECK(!variable.data().is_sharded(), "shard group '", name_, "': ", param_name, " must be a whole parameter, got ",
             variable.data().str(), " (a parameter born partitioned needs ZeRO stage 3)");
  }
  place(std::move(params), rank, world, align);
  flat_params_ = Tensor::zeros({padded()}, options(MemoryCategory::parameter));
  for (GroupParameter& p : params_) {
    Tensor view = flat_params_.slice(0, p.offset, p.offset + p.numel).view(p.variable.shape());
    view.copy_(p.variable.data());
    p.variable.set_data(view);  // the old storage is freed with its last handle
  }
}

void ShardGroup::cast_parameters(DType dtype) {
  SG_CHECK(!is_gathered() && !gather_in_flight(), "cast_parameters: shard group '", name_, "' is gathered");
  if (dtype == dtype_) return;
  dtype_ = dtype;
  Tensor& held = is_sharded() ? flat_shard_ : flat_params_;
  Tensor cast = Tensor::empty({held.numel()}, options(MemoryCategory::parameter, dtype));
  cast.copy_(held);
  held = cast;
  const Sharded& s = layout_.shard();
  for (GroupParameter& p : params_) {
    p.variable.retype(is_sharded() ? Tensor::empty_with(Layout::released(p.variable.shape(), s.rank, s.world),
                                                         options(MemoryCategory::parameter, dtype))
                                   : flat_params_.slice(0, p.offset, p.offset + p.numel).view(p.variable.shape()));
  }
}

Tensor ShardGroup::my_slice(const Tensor& flat) const {
  const int64_t size = shard_size(), start = int64_t(layout_.shard().rank) * size;
  return flat.slice(0, start, start + size);
}

namespace {

// Zeroes every element of `flat` (padded) outside the ranges [offset,
// offset + numel) of the parameters `covers` accepts; the parameters lie
// in offset order.
template <typename Covers>
void zero_uncovered(Tensor& flat, const std::vector<GroupParameter>& params, Covers covers) {
  int64_t from = 0;
  for (const GroupParameter& p : params) {
    if (!covers(p)) continue;
    if (p.offset > from) flat.slice(0, from, p.offset).fill_(0.0);
    from = p.offset + p.numel;
  }
  if (flat.numel() > from) flat.slice(0, from, flat.numel()).fill_(0.0);
}

}  // namespace

Tensor& ShardGroup::attach_flat_grads() {
  flat_grads_ = Tensor::empty({padded()}, options(MemoryCategory::gradient));
  zero_uncovered(flat_grads_, params_, [](const GroupParameter& p) { return p.variable.requires_grad(); });
  for (GroupParameter& p : params_) {
    if (!p.variable.requires_grad()) continue;
    p.variable.set_stale_grad(flat_grads_.slice(0, p.offset, p.offset + p.numel).view(p.variable.shape()));
  }
  return flat_grads_;
}

void ShardGroup::zero_unwritten_grads() {
  for (const GroupParameter& p : params_) {
    if (p.variable.requires_grad()) (void)p.variable.grad();  // zeroes a view no backward wrote
  }
}

void ShardGroup::drop_flat_grads() {
  for (GroupParameter& p : params_) p.variable.zero_grad();
  flat_grads_ = Tensor();
}

Tensor ShardGroup::pack_grads(MemoryCategory category, DType dtype) const {
  Tensor flat = Tensor::empty({padded()}, options(category, dtype));
  zero_uncovered(flat, params_, [](const GroupParameter& p) { return p.variable.grad().defined(); });
  for (const GroupParameter& p : params_) {
    if (p.variable.grad().defined()) flat.slice(0, p.offset, p.offset + p.numel).copy_(p.variable.grad().reshape({p.numel}));
  }
  return flat;
}

void ShardGroup::shard_parameters() {
  SG_CHECK(!is_sharded(), "shard group '", name_, "' is already sharded");
  flat_shard_ = my_slice(flat_params_).with_category(MemoryCategory::parameter);
  flat_params_ = Tensor();
  release();
}

void ShardGroup::gather(Communicator& comm) {
  if (is_gathered()) return;
  if (!gather_in_flight()) begin_gather(comm);
  finish_gather();
}

void ShardGroup::begin_gather(Communicator& comm) {
  SG_CHECK(is_sharded(), "gather: shard group '", name_, "' is not sharded (ZeRO-3 only)");
  SG_CHECK(!gathered_.defined(), "begin_gather: shard group '", name_, "' is already gathered or being gathered");
  gathered_ = Tensor::empty({padded()}, options(MemoryCategory::communication, dtype_));
  gather_work_ = comm.all_gather(gathered_, flat_shard_);
}

void ShardGroup::finish_gather() {
  SG_CHECK(gather_in_flight(), "finish_gather: no gather of shard group '", name_, "' was begun");
  gather_work_->wait();
  gather_work_ = nullptr;
  for (GroupParameter& p : params_) {
    p.variable.replace_data(gathered_.slice(0, p.offset, p.offset + p.numel).view(p.variable.shape()));
  }
}

void ShardGroup::release() {
  if (gather_in_flight()) {  // MPI may still write the buffer: let it land first
    gather_work_->wait();
    gather_work_ = nullptr;
  }
  const Sharded& s = layout_.shard();
  for (GroupParameter& p : params_) {
    p.variable.replace_data(
        Tensor::empty_with(Layout::released(p.variable.shape(), s.rank, s.world),
                           options(MemoryCategory::parameter, dtype_)));
  }
  gathered_ = Tensor();
}

}  // namespace sg
