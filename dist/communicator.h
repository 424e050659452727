// Communicator: the collectives ZeRO is built from, on whatever backend the
// tensor's device calls for (MPI for CPU tensors, NCCL for CUDA tensors; one
// process without a launcher is a world of 1 and needs no MPI at all).
//
//   all_gather(out, in)          out (world * n) = every rank's in (n), in rank order
//   reduce_scatter(out, in, op)  out (n) = rank r's slice of the sum (or mean) of every in (world * n)
//   all_reduce(x, op)            x = the sum (or mean) of every rank's x, in place
//   broadcast(x, root)           x = root's x
//   barrier()
//
// Each returns a Work handle at once; wait() blocks until the collective has
// finished (or throws after the timeout, naming the op, its size and the
// rank). Tensors are kept alive by the Work until then, so callers may drop
// their handles. Every call is counted (calls, elements, bytes sent and
// received per rank; dist/stats.h) so tests can hold ZeRO's communication
// volume to its formulas. With SG_DIST_DEBUG=1 (or set_debug(true)) ranks
// cross-check a running hash of (op, dtype, elements) before every collective
// and report the first call where they differ.
//
// Read next: dist/world.h (how a process joins), dist/shard_ops.h (gathering
// and scattering sharded tensors), docs/dist.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "dist/stats.h"
#include "tensor/tensor.h"

namespace sg {

enum class ReduceOp { sum, average };

// A collective in flight. wait() may be called any number of times.
class Work {
 public:
  virtual ~Work() = default;
  // Blocks until done; throws sg::Error when the timeout (the
  // communicator's when the collective started) passes first. After a
  // timeout the collective is still pending: wait() again, perhaps longer.
  void wait();
  bool completed();  // non-blocking check
  void set_timeout(double seconds) { timeout_ = std::chrono::duration<double>(seconds); }

 protected:
  friend class Communicator;
  virtual bool test() = 0;  // true once the backend has finished
  std::string description_;  // "all_gather of 1024 f32 elements on rank 2 of 4"
  std::chrono::duration<double> timeout_{300.0};
  std::function<void()> on_complete_;  // e.g. dividing by world for an average
  bool done_ = false;
};
using WorkHandle = std::shared_ptr<Work>;

// What a backend implements: the raw collectives on contiguous buffers of
// one device, already validated.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual WorkHandle all_gather(Tensor& output, const Tensor& input) = 0;
  virtual WorkHandle reduce_scatter(Tensor& output, const Tensor& input) = 0;  // sum
  virtual WorkHandle all_reduce(Tensor& tensor) = 0;                          // sum
  virtual WorkHandle broadcast(Tensor& tensor, int root) = 0;
  virtual WorkHandle barrier() = 0;
};

class Communicator {
 public:
  // rank/world of this process; `cpu` carries CPU tensors; `make_cuda`
  // creates the CUDA backend on first use (null: CUDA tensors are refused).
  Communicator(int rank, int world, std::unique_ptr<Backend> cpu,
               std::function<std::unique_ptr<Backend>()> make_cuda = nullptr);
  ~Communicator();

  int rank() const { return rank_; }
  int world_size() const { return world_; }

  WorkHandle all_gather(Tensor& output, const Tensor& input);
  WorkHandle reduce_scatter(Tensor& output, const Tensor& input, ReduceOp op = ReduceOp::sum);
  WorkHandle all_reduce(Tensor& tensor, ReduceOp op = ReduceOp::sum);
  WorkHandle broadcast(Tensor& tensor, int root);
  WorkHandle barrier();

  // Timeout for every later collective's wait() (default 300 s, or
  // SG_DIST_TIMEOUT seconds from the environment).
  void set_timeout(double seconds);
  double timeout() const { return timeout_.count(); }
  // Cross-checks the ranks' collective sequence before every call (SG_DIST_DEBUG=1).
  void set_debug(bool on) { debug_ = on; }
  bool debug() const { return debug_; }

  const CommStats& stats() const { return stats_; }
  void reset_stats() { stats_ = CommStats{}; }

 private:
  Backend& backend_for(const Tensor& tensor);
  WorkHandle finish(WorkHandle work, CollectiveOp op, const Tensor& payload, std::function<void()> on_complete);
  void check_sequence(CollectiveOp op, const Tensor& payload);
  std::function<void()> average_after(ReduceOp op, const Tensor& result) const;

  int rank_, world_;
  std::unique_ptr<Backend> cpu_;
  std::unique_ptr<Backend> cuda_;
  std::function<std::unique_ptr<Backend>()> make_cuda_;
  std::chrono::duration<double> timeout_{300.0};
  bool debug_ = false;
  CommStats stats_;
  uint64_t sequence_hash_ = 0x9e3779b97f4a7c15ull;
  int64_t calls_ = 0;
};

}  // namespace sg
