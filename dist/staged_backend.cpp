// The staged backend: collectives on device tensors carried by a host
// backend (MPI) through pinned host buffers.
//
// Why: NCCL needs one GPU per rank. Several ranks sharing one GPU (the ZeRO
// equivalence tests on a one-GPU machine, or a laptop) still need their
// CUDA tensors reduced and gathered; MPI moves host memory, so each
// collective copies its device inputs into page-locked host buffers, runs
// the host collective on them, and copies the results back when it is done.
//
//   device input --D2H--> pinned in --MPI--> pinned out --H2D--> device output
//
// The D2H copy is issued on the device's compute stream and waited for, so it
// sees every kernel that wrote the input. The H2D copy happens in the Work's
// completion check (wait() or completed()), before anything can read the
// output. The staging buffers are CPU tensors of the communication category,
// counted by the allocator like any other buffer. Slow (two PCIe copies and
// a host collective per call) and meant for correctness, not speed.
#include "dist/backends.h"

namespace sg {
namespace {

Tensor staging_like(const Tensor& t) {
  return Tensor::empty({t.numel()}, TensorOptions()
                                        .dtype(t.dtype())
                                        .category(MemoryCategory::communication)
                                        .pinned(true));
}

Tensor stage_in(const Tensor& t) {
  Tensor staged = staging_like(t);
  staged.copy_(t.view({t.numel()}));
  return staged;
}

// Completes when the host collective has; then lands its result on the device.
class StagedWork : public Work {
 public:
  StagedWork(WorkHandle host, Tensor staged_result, Tensor result)
      : host_(std::move(host)), staged_result_(std::move(staged_result)), result_(std::move(result)) {}

 protected:
  bool test() override {
    if (!host_->completed()) return false;
    if (result_.defined()) {
      Tensor flat = result_.view({result_.numel()});
      flat.copy_(staged_result_);
      result_ = Tensor();
      staged_result_ = Tensor();
    }
    return true;
  }

 private:
  WorkHandle host_;  // holds the staging buffers alive while MPI uses them
  Tensor staged_result_, result_;
};

class StagedBackend : public Backend {
 public:
  explicit StagedBackend(std::unique_ptr<Backend> host) : host_(std::move(host)) {}

  std::string name() const override { return "staged " + host_->name(); }

  WorkHandle all_gather(Tensor& output, const Tensor& input) override {
    Tensor in = stage_in(input), out = staging_like(output);
    return std::make_shared<StagedWork>(host_->all_gather(out, in), out, output);
  }
  WorkHandle reduce_scatter(Tensor& output, const Tensor& input) override {
    Tensor in = stage_in(input), out = staging_like(output);
    return std::make_shared<StagedWork>(host_->reduce_scatter(out, in), out, output);
  }
  WorkHandle all_reduce(Tensor& tensor) override {
    Tensor staged = stage_in(tensor);
    return std::make_shared<StagedWork>(host_->all_reduce(staged), staged, tensor);
  }
  WorkHandle broadcast(Tensor& tensor, int root) override {
    Tensor staged = stage_in(tensor);
    return std::make_shared<StagedWork>(host_->broadcast(staged, root), staged, tensor);
  }
  WorkHandle barrier() override { return host_->barrier(); }

 private:
  std::unique_ptr<Backend> host_;
};

}  // namespace

std::unique_ptr<Backend> make_staged_backend(std::unique_ptr<Backend> host) {
  return std::make_unique<StagedBackend>(std::move(host));
}

}  // namespace sg
