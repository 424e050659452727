// bench_collectives: time, algorithm bandwidth and bus bandwidth of the
// collectives per message size, as nccl-tests prints them.
//
//   mpirun --oversubscribe --allow-run-as-root -np 4 build/bin/bench_collectives [--device cpu|cuda]
//       [--min-bytes 1024] [--max-bytes 67108864] [--iters 20]
//
// bytes is the collective's payload (the gathered output of all_gather, the
// reduced input of reduce_scatter, the tensor of all_reduce), in f32.
//   algbw = bytes / time
//   busbw = algbw * 2 (n - 1) / n   for all_reduce
//           algbw * (n - 1) / n     for all_gather and reduce_scatter
// busbw is what each rank's links carry under a ring algorithm, comparable
// across world sizes. time is the slowest rank's mean over --iters calls.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "dist/world.h"
#include "examples/cli.h"
#include "tensor/ops.h"

namespace {

using sg::CollectiveOp;

struct Options {
  std::string device = "cpu";
  int64_t min_bytes = 1024, max_bytes = 64 << 20;
  int iters = 20;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    SG_CHECK(i + 1 < argc, flag, " needs a value");
    std::string value = argv[++i];
    if (flag == "--device") o.device = value;
    else if (flag == "--min-bytes") o.min_bytes = sg::parse_int_flag("min-bytes", value);
    else if (flag == "--max-bytes") o.max_bytes = sg::parse_int_flag("max-bytes", value);
    else if (flag == "--iters") o.iters = std::max(1, sg::parse_int32_flag("iters", value));
    else SG_FAIL("unknown flag ", flag, "; flags: --device cpu|cuda --min-bytes N --max-bytes N --iters N");
  }
  return o;
}

// The slowest rank's seconds: everyone waits for it.
double slowest(sg::Communicator& comm, double seconds) {
  sg::Tensor mine = sg::Tensor::full({1}, seconds, sg::TensorOptions().dtype(sg::DType::f64));
  sg::Tensor all = sg::Tensor::empty({comm.world_size()}, sg::TensorOptions().dtype(sg::DType::f64));
  comm.all_gather(all, mine)->wait();
  std::vector<double> v = all.to_vector<double>();
  return *std::max_element(v.begin(), v.end());
}

void run(sg::Communicator& comm, CollectiveOp op, int64_t bytes, const Options& o, sg::Device device) {
  const int W = comm.world_size();
  const int64_t elements = std::max<int64_t>(W, bytes / 4 / W * W);
  sg::TensorOptions options = sg::TensorOptions().device(device);
  sg::Tensor full = sg::Tensor::ones({elements}, options), part = sg::Tensor::ones({elements / W}, options);
  auto once = [&] {
    switch (op) {
      case CollectiveOp::all_reduce: comm.all_reduce(full)->wait(); break;
      case CollectiveOp::all_gather: comm.all_gather(full, part)->wait(); break;
      default: comm.reduce_scatter(part, full)->wait(); break;
    }
  };
  for (int i = 0; i < 3; ++i) once();  // warm-up
  comm.barrier()->wait();
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < o.iters; ++i) once();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / o.iters;
  seconds = slowest(comm, seconds);
  const double payload = double(elements) * 4.0;
  const double algbw = payload / seconds / 1e9;
  const double factor = op == CollectiveOp::all_reduce ? 2.0 * (W - 1) / W : double(W - 1) / W;
  if (comm.rank() == 0) {
    std::printf("| %-14s | %12.0f | %10.1f | %10.3f | %10.3f |\n", std::string(sg::collective_name(op)).c_str(), payload,
                seconds * 1e6, algbw, algbw * factor);
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Options o = parse(argc, argv);
    sg::Communicator& comm = sg::world();
    sg::Device device = sg::parse_device(o.device);
    SG_CHECK(device.is_cpu() || sg::cuda_available(), "--device ", o.device, ": no CUDA device is visible");
    if (device.is_cuda()) device = sg::local_cuda_device();
    if (comm.rank() == 0) {
      std::printf("bench_collectives: %d ranks, %s tensors, f32, %d iterations per size\n", comm.world_size(),
                  device.is_cpu() ? "cpu (MPI)" : "cuda (NCCL)", o.iters);
      std::printf("| op             |        bytes |    time us | algbw GB/s | busbw GB/s |\n");
      std::printf("|----------------|--------------|------------|------------|------------|\n");
    }
    for (CollectiveOp op : {CollectiveOp::all_reduce, CollectiveOp::all_gather, CollectiveOp::reduce_scatter}) {
      for (int64_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= 4) run(comm, op, bytes, o, device);
    }
    sg::finalize_world();
    return 0;
  } catch (const sg::Error& error) {
    sg::abort_job_after_error("bench_collectives", error.what());
    std::fprintf(stderr, "bench_collectives: %s\n", error.what());
    return 1;
  }
}
