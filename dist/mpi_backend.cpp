// The MPI backend: nonblocking collectives (MPI_Iallgather and friends) on
// MPI_COMM_WORLD. A Work holds the MPI_Request and the tensors it reads and
// writes; wait() polls MPI_Test, so a timeout can fire instead of hanging.
//
// MPI has no 16-bit float types: bf16 and f16 travel as MPI_UINT16_T, and
// their sums use user-defined MPI_Ops that widen to f32, add, and round back.
#include <mpi.h>

#include <climits>
#include <vector>

#include "dist/backends.h"

namespace sg {
namespace {

#define MPI_CHECK(call)                                                          \
  do {                                                                           \
    int status_ = (call);                                                        \
    if (status_ != MPI_SUCCESS) {                                                \
      char text_[MPI_MAX_ERROR_STRING];                                          \
      int length_ = 0;                                                           \
      MPI_Error_string(status_, text_, &length_);                                \
      SG_FAIL(#call, " failed: ", std::string(text_, size_t(length_)), " (", __FILE__, ":", __LINE__, ")"); \
    }                                                                            \
  } while (0)

template <typename Half>
void half_sum(void* in, void* inout, int* length, MPI_Datatype*) {
  const Half* a = static_cast<const Half*>(in);
  Half* b = static_cast<Half*>(inout);
  for (int i = 0; i < *length; ++i) {
    if constexpr (std::is_same_v<Half, bf16>) b[i] = to_bf16(to_float(a[i]) + to_float(b[i]));
    else b[i] = to_f16(to_float(a[i]) + to_float(b[i]));
  }
}

// Buffers of collectives whose Work was dropped before they completed (after
// a timeout, say). MPI may still write them whenever the late rank arrives,
// so they are never freed: a bounded leak instead of a corrupted heap.
std::vector<std::vector<Tensor>>& abandoned_buffers() {
  static auto* buffers = new std::vector<std::vector<Tensor>>();
  return *buffers;
}

class MpiWork : public Work {
 public:
  explicit MpiWork(std::vector<Tensor> keep_alive) : keep_alive_(std::move(keep_alive)) {}
  ~MpiWork() override {
    if (request != MPI_REQUEST_NULL && !keep_alive_.empty()) abandoned_buffers().push_back(std::move(keep_alive_));
  }
  MPI_Request request = MPI_REQUEST_NULL;

 protected:
  bool test() override {
    int flag = 0;
    MPI_CHECK(MPI_Test(&request, &flag, MPI_STATUS_IGNORE));
    if (flag) keep_alive_.clear();
    return flag != 0;
  }

 private:
  std::vector<Tensor> keep_alive_;  // buffers MPI reads or writes until completion
};

class MpiBackend : public Backend {
 public:
  MpiBackend() {
    MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Op_create(&half_sum<bf16>, /*commute=*/1, &bf16_sum_));
    MPI_CHECK(MPI_Op_create(&half_sum<f16>, /*commute=*/1, &f16_sum_));
  }
  ~MpiBackend() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) {
      MPI_Op_free(&bf16_sum_);
      MPI_Op_free(&f16_sum_);
    }
  }

  std::string name() const override { return "mpi"; }

  WorkHandle all_gather(Tensor& output, const Tensor& input) override {
    auto work = std::make_shared<MpiWork>(std::vector<Tensor>{output, input});
    MPI_CHECK(MPI_Iallgather(input.data_ptr(), count(input), type(input), output.data_ptr(), count(input), type(input),
                             MPI_COMM_WORLD, &work->request));
    return work;
  }

  WorkHandle reduce_scatter(Tensor& output, const Tensor& input) override {
    auto work = std::make_shared<MpiWork>(std::vector<Tensor>{output, input});
    MPI_CHECK(MPI_Ireduce_scatter_block(input.data_ptr(), output.data_ptr(), count(output), type(input), sum(input),
                                        MPI_COMM_WORLD, &work->request));
    return work;
  }

  WorkHandle all_reduce(Tensor& tensor) override {
    auto work = std::make_shared<MpiWork>(std::vector<Tensor>{tensor});
    MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, tensor.data_ptr(), count(tensor), type(tensor), sum(tensor), MPI_COMM_WORLD,
                             &work->request));
    return work;
  }

  WorkHandle broadcast(Tensor& tensor, int root) override {
    auto work = std::make_shared<MpiWork>(std::vector<Tensor>{tensor});
    MPI_CHECK(MPI_Ibcast(tensor.data_ptr(), count(tensor), type(tensor), root, MPI_COMM_WORLD, &work->request));
    return work;
  }

  WorkHandle barrier() override {
    auto work = std::make_shared<MpiWork>(std::vector<Tensor>{});
    MPI_CHECK(MPI_Ibarrier(MPI_COMM_WORLD, &work->request));
    return work;
  }

 private:
  static int count(const Tensor& t) {
    SG_CHECK(t.numel() <= INT_MAX, "MPI counts are 32-bit: ", t.str(), " is too large for one collective; split it");
    return int(t.numel());
  }
  static MPI_Datatype type(const Tensor& t) {
    SG_CHECK(t.device().is_cpu(), "the MPI backend carries CPU tensors, got ", t.str());
    switch (t.dtype()) {
      case DType::f32: return MPI_FLOAT;
      case DType::f64: return MPI_DOUBLE;
      case DType::bf16:
      case DType::f16: return MPI_UINT16_T;
      case DType::i32: return MPI_INT32_T;
      case DType::i64: return MPI_INT64_T;
    }
    return MPI_DATATYPE_NULL;
  }
  MPI_Op sum(const Tensor& t) const {
    if (t.dtype() == DType::bf16) return bf16_sum_;
    if (t.dtype() == DType::f16) return f16_sum_;
    return MPI_SUM;
  }

  MPI_Op bf16_sum_ = MPI_OP_NULL, f16_sum_ = MPI_OP_NULL;
};

}  // namespace

std::unique_ptr<Backend> make_mpi_backend() { return std::make_unique<MpiBackend>(); }

}  // namespace sg
