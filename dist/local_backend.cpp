// The world-of-one backend: every collective is already complete.
#include "dist/backends.h"

namespace sg {
namespace {

class DoneWork : public Work {
 protected:
  bool test() override { return true; }
};

class LocalBackend : public Backend {
 public:
  std::string name() const override { return "local"; }
  WorkHandle all_gather(Tensor& output, const Tensor& input) override {
    output.copy_(input);  // one rank: the gathered tensor is the input
    return std::make_shared<DoneWork>();
  }
  WorkHandle reduce_scatter(Tensor& output, const Tensor& input) override {
    output.copy_(input);  // the sum over one rank, and its only slice
    return std::make_shared<DoneWork>();
  }
  WorkHandle all_reduce(Tensor&) override { return std::make_shared<DoneWork>(); }
  WorkHandle broadcast(Tensor&, int) override { return std::make_shared<DoneWork>(); }
  WorkHandle barrier() override { return std::make_shared<DoneWork>(); }
};

}  // namespace

std::unique_ptr<Backend> make_local_backend() { return std::make_unique<LocalBackend>(); }

}  // namespace sg
