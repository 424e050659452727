// Communicator: validation, accounting, timeouts and the divergence check,
// shared by every backend. The backends (local.cpp, mpi_backend.cpp,
// nccl_backend.cpp) only move bytes.
#include "dist/communicator.h"

#include <cstdlib>
#include <sstream>
#include <thread>

#include "tensor/ops.h"

namespace sg {
namespace {

std::string describe(CollectiveOp op, const Tensor& payload, int rank, int world) {
  std::ostringstream out;
  out << collective_name(op);
  if (op != CollectiveOp::barrier) out << " of " << payload.numel() << " " << dtype_name(payload.dtype()) << " elements";
  out << " on rank " << rank << " of " << world;
  return out.str();
}

void check_contiguous(std::string_view op, const Tensor& t) {
  SG_CHECK(t.defined() && t.is_contiguous() && !t.is_sharded(), op, ": needs a contiguous, unsharded buffer, got ",
           t.str(), "; pass .local() of a shard, or .contiguous()");
}

}  // namespace

void Work::wait() {
  if (done_) return;
  const auto start = std::chrono::steady_clock::now();
  auto pause = std::chrono::microseconds(20);
  while (!test()) {
    if (std::chrono::steady_clock::now() - start > timeout_) {
      SG_FAIL(description_, " timed out after ", timeout_.count(), " s: another rank has not joined it (it may have ",
              "failed, or taken a different path through the program; SG_DIST_DEBUG=1 compares the ranks' ",
              "sequences of collectives)");
    }
    // Back off up to 1 ms: ranks often share cores, and a spinning waiter
    // steals the time the late rank needs to arrive.
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(1000));
  }
  done_ = true;
  if (on_complete_) on_complete_();
}

bool Work::completed() {
  if (!done_ && test()) {
    done_ = true;
    if (on_complete_) on_complete_();
  }
  return done_;
}

Communicator::Communicator(int rank, int world, std::unique_ptr<Backend> cpu,
                           std::function<std::unique_ptr<Backend>()> make_cuda)
    : rank_(rank), world_(world), cpu_(std::move(cpu)), make_cuda_(std::move(make_cuda)) {
  SG_CHECK(world >= 1 && rank >= 0 && rank < world, "communicator: rank ", rank, " outside a world of ", world);
  if (const char* seconds = std::getenv("SG_DIST_TIMEOUT")) set_timeout(std::atof(seconds));
  if (const char* debug = std::getenv("SG_DIST_DEBUG")) debug_ = std::string(debug) == "1";
}

Communicator::~Communicator() = default;

void Communicator::set_timeout(double seconds) {
  SG_CHECK(seconds > 0, "a collective timeout must be positive, got ", seconds, " s");
  timeout_ = std::chrono::duration<double>(seconds);
}

Backend& Communicator::backend_for(const Tensor& tensor) {
  if (tensor.device().is_cpu()) return *cpu_;
  if (!cuda_) {
    SG_CHECK(make_cuda_ != nullptr, "this build has no backend for CUDA tensors (NCCL); keep collectives on CPU tensors");
    cuda_ = make_cuda_();
  }
  return *cuda_;
}

// Every rank contributes (hash of its sequence so far, call number, op, dtype,
// elements); any difference is reported with each rank's view of the call.
void Communicator::check_sequence(CollectiveOp op, const Tensor& payload) {
  int64_t dtype = op == CollectiveOp::barrier ? -1 : int64_t(payload.dtype());
  int64_t elements = op == CollectiveOp::barrier ? 0 : payload.numel();
  uint64_t next_hash = sequence_hash_;  // committed only when every rank agrees
  for (int64_t value : {int64_t(op), dtype, elements}) next_hash = (next_hash ^ uint64_t(value)) * 0x100000001b3ull;
  if (world_ == 1) return;
  Tensor mine = Tensor::from_vector(std::vector<int64_t>{int64_t(next_hash), calls_, int64_t(op), dtype, elements}, {5});
  Tensor all = Tensor::empty({5 * int64_t(world_)}, TensorOptions().dtype(DType::i64));
  WorkHandle work = cpu_->all_gather(all, mine);
  work->description_ = "the SG_DIST_DEBUG sequence check before collective #" + std::to_string(calls_);
  work->timeout_ = timeout_;
  work->wait();
  std::vector<int64_t> v = all.to_vector<int64_t>();
  bool same = true;
  for (int r = 1; r < world_; ++r) same &= v[size_t(5 * r)] == v[0];
  if (same) {
    sequence_hash_ = next_hash;
    return;
  }
  std::ostringstream report;
  report << "ranks diverged at collective #" << calls_ << " (SG_DIST_DEBUG):";
  for (int r = 0; r < world_; ++r) {
    const int64_t* row = &v[size_t(5 * r)];
    report << "\n  rank " << r << ": " << collective_name(CollectiveOp(row[2]));
    if (row[3] >= 0) report << " of " << row[4] << " " << dtype_name(DType(row[3])) << " elements";
    if (row[1] != calls_) report << " (its collective #" << row[1] << ")";
  }
  report << "\nevery rank must issue the same collectives in the same order; look for a branch taken on some ranks only";
  SG_FAIL(report.str());
}

WorkHandle Communicator::finish(WorkHandle work, CollectiveOp op, const Tensor& payload, std::function<void()> on_complete) {
  const int64_t elements = op == CollectiveOp::barrier ? 0 : payload.numel();
  const int64_t bytes = op == CollectiveOp::barrier ? 0 : payload.nbytes();
  OpStats& s = stats_[op];
  s.calls += 1;
  s.elements += elements;
  switch (op) {
    case CollectiveOp::all_gather:
    case CollectiveOp::reduce_scatter:
      s.bytes_sent += bytes * (world_ - 1) / world_;
      s.bytes_received += bytes * (world_ - 1) / world_;
      break;
    case CollectiveOp::all_reduce:
      s.bytes_sent += 2 * bytes * (world_ - 1) / world_;
      s.bytes_received += 2 * bytes * (world_ - 1) / world_;
      break;
    default: break;  // broadcast: counted by the caller, which knows the root
  }
  work->description_ = describe(op, payload, rank_, world_);
  work->timeout_ = timeout_;
  work->on_complete_ = std::move(on_complete);
  ++calls_;
  return work;
}

// An average is the sum divided by the world, applied once the sum has landed.
std::function<void()> Communicator::average_after(ReduceOp op, const Tensor& result) const {
  if (op != ReduceOp::average || world_ == 1) return nullptr;
  Tensor out = result;
  const double factor = 1.0 / world_;
  return [out, factor]() mutable { scale_(out, factor); };  // in place: one pass, no copy (out is contiguous)
}

WorkHandle Communicator::all_gather(Tensor& output, const Tensor& input) {
  check_contiguous("all_gather", output);
  check_contiguous("all_gather", input);
  SG_CHECK(output.dtype() == input.dtype() && output.device() == input.device() &&
               output.numel() == input.numel() * world_,
           "all_gather: the output ", output.str(), " must hold world (", world_, ") times the input ", input.str(),
           " on the same device and dtype");
  if (debug_) check_sequence(CollectiveOp::all_gather, output);
  return finish(backend_for(input).all_gather(output, input), CollectiveOp::all_gather, output, nullptr);
}

WorkHandle Communicator::reduce_scatter(Tensor& output, const Tensor& input, ReduceOp op) {
  check_contiguous("reduce_scatter", output);
  check_contiguous("reduce_scatter", input);
  SG_CHECK(is_floating(input.dtype()), "reduce_scatter: sums need a floating tensor, got ", input.str());
  SG_CHECK(output.dtype() == input.dtype() && output.device() == input.device() &&
               input.numel() == output.numel() * world_,
           "reduce_scatter: the input ", input.str(), " must hold world (", world_, ") times the output ", output.str(),
           " on the same device and dtype; pad the input to a multiple of the world (shard layouts do)");
  if (debug_) check_sequence(CollectiveOp::reduce_scatter, input);
  return finish(backend_for(input).reduce_scatter(output, input), CollectiveOp::reduce_scatter, input,
                average_after(op, output));
}

WorkHandle Communicator::all_reduce(Tensor& tensor, ReduceOp op) {
  check_contiguous("all_reduce", tensor);
  SG_CHECK(is_floating(tensor.dtype()), "all_reduce: sums need a floating tensor, got ", tensor.str());
  if (debug_) check_sequence(CollectiveOp::all_reduce, tensor);
  return finish(backend_for(tensor).all_reduce(tensor), CollectiveOp::all_reduce, tensor, average_after(op, tensor));
}

WorkHandle Communicator::broadcast(Tensor& tensor, int root) {
  check_contiguous("broadcast", tensor);
  SG_CHECK(root >= 0 && root < world_, "broadcast: root ", root, " is outside the world of ", world_);
  if (debug_) check_sequence(CollectiveOp::broadcast, tensor);
  if (world_ > 1) {
    OpStats& s = stats_[CollectiveOp::broadcast];
    (rank_ == root ? s.bytes_sent : s.bytes_received) += tensor.nbytes();
  }
  return finish(backend_for(tensor).broadcast(tensor, root), CollectiveOp::broadcast, tensor, nullptr);
}

WorkHandle Communicator::barrier() {
  if (debug_) check_sequence(CollectiveOp::barrier, Tensor());
  return finish(cpu_->barrier(), CollectiveOp::barrier, Tensor(), nullptr);
}

}  // namespace sg
