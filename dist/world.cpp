#include "dist/world.h"

#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>

#include "dist/backends.h"

#ifdef SG_MPI
#include <mpi.h>
#endif

namespace sg {
namespace {

const char* first_env(std::initializer_list<const char*> names) {
  for (const char* name : names) {
    if (const char* value = std::getenv(name)) return value;
  }
  return nullptr;
}

#ifdef SG_MPI
int g_rank_for_messages = 0;

int ranks_on_this_node() {
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int local = 1;
  MPI_Comm_size(node, &local);
  MPI_Comm_free(&node);
  return local;
}

// Prints `message` with this rank's number and takes the whole job down.
[[noreturn]] void print_and_abort_job(const char* program, const char* message) {
  std::fprintf(stderr, "%s: rank %d failed: %s\n%s: aborting every rank of the job\n", program, g_rank_for_messages,
               message, program);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();
}

// The uncaught exception's message, so the other ranks do not wait for this
// one until their timeouts.
[[noreturn]] void abort_job() {
  std::string message = "unknown error";
  if (std::exception_ptr error = std::current_exception()) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      message = e.what();
    } catch (...) {
    }
  }
  print_and_abort_job("shardgrad", message.c_str());
}

// Ranks on one node share its cores. OpenMP's default gives every rank a
// thread per core, which oversubscribes the node, and its spinning threads
// then starve one another (4 ranks of the ZeRO tests on 2 cores: 56 s
// instead of 0.9 s). Unless OMP_NUM_THREADS says otherwise, each rank gets
// its share: the cores it may run on, divided by the ranks on this node.
void share_cores_between_local_ranks() {
  if (std::getenv("OMP_NUM_THREADS") != nullptr) return;
  const int local = ranks_on_this_node();
  const int cores = omp_get_num_procs();  // respects the launcher's binding
  const int hardware = int(std::max(1u, std::thread::hardware_concurrency()));
  // A rank bound to its own cores may use them all; unbound ranks split the node.
  const int share = cores < hardware ? cores : std::max(1, hardware / local);
  omp_set_num_threads(std::max(1, std::min(cores, share)));
}

void finalize_at_exit() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Finalize();
}
#endif

// The backend for CUDA tensors, created on the first collective on one
// (choose_cuda_collectives has the rule).
std::function<std::unique_ptr<Backend>()> cuda_backend_factory() {
  return []() -> std::unique_ptr<Backend> {
    const char* forced = std::getenv("SG_CUDA_COLLECTIVES");
    const bool launched = launched_by_mpi();
    int ranks = 1;
#ifdef SG_MPI
    if (launched) ranks = ranks_on_this_node();
#endif
#ifdef SG_NCCL
    constexpr bool nccl_built = true;
#else
    constexpr bool nccl_built = false;
#endif
    const int gpus = std::max(1, cuda_device_count());
    switch (choose_cuda_collectives(launched, ranks, gpus, nccl_built, forced ? forced : "")) {
      case CudaCollectives::local: return make_local_backend();
      case CudaCollectives::nccl:
#ifdef SG_NCCL
        return make_nccl_backend(world(), local_rank() % gpus);
#else
        break;
#endif
      case CudaCollectives::staged_mpi:
#ifdef SG_MPI
        return make_staged_backend(make_mpi_backend());
#else
        break;
#endif
    }
    SG_FAIL("no backend for CUDA tensors in this build");
  };
}

std::unique_ptr<Communicator> create_world() {
  if (!launched_by_mpi()) return std::make_unique<Communicator>(0, 1, make_local_backend(), cuda_backend_factory());
#ifdef SG_MPI
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  g_rank_for_messages = rank;
  share_cores_between_local_ranks();
  std::set_terminate(abort_job);
  std::atexit(finalize_at_exit);
  return std::make_unique<Communicator>(rank, size, make_mpi_backend(), cuda_backend_factory());
#else
  SG_FAIL("this process was started by an MPI launcher, but shardgrad was built without MPI (SG_MPI=OFF); "
          "install OpenMPI (scripts/setup-deps.sh) and rebuild");
#endif
}

}  // namespace

CudaCollectives choose_cuda_collectives(bool launched, int ranks_on_node, int gpus_on_node, bool nccl_built,
                                        const std::string& forced) {
  SG_CHECK(forced.empty() || forced == "nccl" || forced == "mpi", "SG_CUDA_COLLECTIVES must be nccl or mpi, got '",
           forced, "'");
  if (!launched) return CudaCollectives::local;
  const bool sharing = ranks_on_node > gpus_on_node;
  if (forced == "nccl") {
    SG_CHECK(nccl_built, "SG_CUDA_COLLECTIVES=nccl, but this build has no NCCL");
    SG_CHECK(!sharing, "SG_CUDA_COLLECTIVES=nccl, but ", ranks_on_node, " ranks share ", gpus_on_node,
             " GPU(s) on this node and NCCL needs one GPU per rank; unset it to carry CUDA tensors over MPI");
    return CudaCollectives::nccl;
  }
  if (forced.empty() && nccl_built && !sharing) return CudaCollectives::nccl;
  return CudaCollectives::staged_mpi;
}

bool launched_by_mpi() { return first_env({"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) != nullptr; }

int local_rank() {
  const char* value = first_env({"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK"});
  return value ? std::atoi(value) : 0;
}

int local_world_size() {
  const char* value = first_env({"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE"});
  return value ? std::max(1, std::atoi(value)) : 1;
}

Device local_cuda_device() {
  const int gpus = cuda_device_count();
  SG_CHECK(gpus > 0, "local_cuda_device(): no GPU is visible to this process (a build without CUDA, no driver, or "
                     "CUDA_VISIBLE_DEVICES empty)");
  return Device::cuda(local_rank() % gpus);
}

Communicator& world() {
  static std::unique_ptr<Communicator> instance;
  static std::once_flag once;
  std::call_once(once, [] { instance = create_world(); });
  return *instance;
}

void finalize_world() {
#ifdef SG_MPI
  finalize_at_exit();
#endif
}

void abort_job_after_error(const char* program, const char* message) {
#ifdef SG_MPI
  int initialized = 0, finalized = 0, size = 1;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size > 1) print_and_abort_job(program, message);
#else
  (void)program, (void)message;
#endif
}

}  // namespace sg
