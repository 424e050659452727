// ShardGroup: the parameters of one unit (a transformer block, an embedding,
// the final norm) packed into one flat, padded buffer, so that one collective
// moves the whole unit: one all-gather brings every parameter of a block,
// one reduce-scatter returns all of its gradients.
//
//   flat (padded to a multiple of world):
//   [ c_attn.weight | c_attn.bias | c_proj.weight | ... |  pad ]
//   |<--- rank 0 --->|<--- rank 1 --->|<--- rank 2 --->|<-- rank 3 -->|
//
// Each parameter keeps its own name, shape and offset, and its Variable's
// data becomes a view into the flat buffer: gathering into the buffer
// updates every parameter at once, with no copies. The ranks' slices follow
// the flat layout (tensor/layout.h), so a slice may cut through a parameter.
//
// Read next: optim/zero.h, which drives the groups through a training step.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "autograd/variable.h"
#include "dist/communicator.h"

namespace sg {

struct GroupParameter {
  std::string name;
  Variable variable;
  int64_t offset = 0;  // first flat index
  int64_t numel = 0;
};

// Fills a 1-D buffer with elements [first, first + n) of one parameter's
// initial values (nn::initialize_values under the model's seed): how a
// born-partitioned group creates only its own slice.
using SliceInitializer = std::function<void(Tensor& values, int64_t first)>;

class ShardGroup {
 public:
  // Moves the parameters' values into the group's flat buffer (one
  // allocation, counted as parameter memory) and makes their data views of it.
  ShardGroup(std::string name, std::vector<std::pair<std::string, Variable>> params, int rank, int world,
             int64_t align = 16);

  // Born partitioned (ZeRO-3): the parameters are placeholders that were
  // never allocated (nn::DeferredParameters); only this rank's slice is
  // created, each parameter's part of it filled by its initializer.
  static ShardGroup born_partitioned(std::string name, std::vector<std::pair<std::string, Variable>> params,
                                     const std::vector<SliceInitializer>& initializers, int rank, int world,
                                     int64_t align = 16);

  const std::string& name() const { return name_; }
  const std::vector<GroupParameter>& params() const { return params_; }
  const Layout& layout() const { return layout_; }  // the flat range, sharded over the world
  int64_t numel() const { return layout_.global_numel(); }
  int64_t padded() const { return layout_.shard().padded; }
  int64_t shard_size() const { return layout_.shard().shard_size(); }

  Tensor& flat_params() { return flat_params_; }  // (padded) every parameter, replicated
  const Tensor& flat_params() const { return flat_params_; }
  // This rank's slice of a (padded) flat buffer, as a 1-D view.
  Tensor my_slice(const Tensor& flat) const;

  // Gradients accumulate straight into one flat buffer (each parameter's
  // .grad is a view of it), ready to be reduced in one call. The buffer is
  // not zero-filled: only what no parameter covers (the padding) is zeroed,
  // and each view is a stale gradient (Variable::set_stale_grad) that the
  // first backward to reach it writes instead of adding to.
  Tensor& attach_flat_grads();
  // Zeroes the views no backward has written since attach_flat_grads (a
  // parameter the step never reached): the whole buffer then holds the
  // gradients. Before anything reads flat_grads() itself.
  void zero_unwritten_grads();
  Tensor& flat_grads() { return flat_grads_; }
  const Tensor& flat_grads() const { return flat_grads_; }
  void drop_flat_grads();  // frees the buffer and every parameter's .grad

  // Copies each parameter's current .grad into a fresh flat buffer of
  // `dtype` (zeros where a parameter has none). For stages that let
  // autograd allocate grads.
  Tensor pack_grads(MemoryCategory category, DType dtype = DType::f32) const;

  // Mixed precision: the parameters the model computes with (the whole
  // buffer, or this rank's shard, and what gathers bring) become `dtype`;
  // the f32 master copy is the optimizer's business.
  void cast_parameters(DType dtype);
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }  // every buffer of the group lives there
  // Options for a buffer of the group: its device, `category`, `dtype`.
  TensorOptions options(MemoryCategory category, DType dtype = DType::f32) const {
    return TensorOptions().dtype(dtype).device(device_).category(category);
  }

  // ---- ZeRO-3: parameters partitioned --------------------------------------
  // Keeps only this rank's slice of the flat parameters (flat_shard()) and
  // turns every parameter's data into a released placeholder (its global
  // shape, no elements; tensor/layout.h).
  void shard_parameters();
  bool is_sharded() const { return flat_shard_.defined(); }
  Tensor& flat_shard() { return flat_shard_; }
  // gather(): one all-gather of every rank's slice into a communication
  // buffer; the parameters' data become views of it. release(): back to
  // placeholders, the buffer freed (once no op still holds a view).
  void gather(Communicator& comm);
  void release();
  bool is_gathered() const { return gathered_.defined() && !gather_work_; }
  // The same gather in two halves, so it can run ahead (prefetch): begin
  // starts the all-gather and returns; finish waits for it and points the
  // parameters at the buffer.
  void begin_gather(Communicator& comm);
  void finish_gather();
  bool gather_in_flight() const { return gather_work_ != nullptr; }

 private:
  ShardGroup() = default;
  void place(std::vector<std::pair<std::string, Variable>> params, int rank, int world, int64_t align);
  std::string name_;
  std::vector<GroupParameter> params_;
  Layout layout_;
  Tensor flat_params_, flat_grads_;
  Tensor flat_shard_, gathered_;  // ZeRO-3: this rank's slice; the gathered buffer while gathered
  WorkHandle gather_work_;        // a gather begun but not finished
  DType dtype_ = DType::f32;      // of the parameters (f32, or bf16/f16 under mixed precision)
  Device device_ = Device::cpu();
};

}  // namespace sg
