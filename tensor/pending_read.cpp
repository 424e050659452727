#include "tensor/pending_read.h"

#include "tensor/dispatch.h"
#ifdef SG_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace sg {

PendingRead::PendingRead(const Tensor& source) {
  SG_CHECK(source.defined() && !source.is_sharded(), "PendingRead: expected a whole tensor, got ",
           source.defined() ? source.str() : std::string("an undefined one"));
  if (source.device().is_cpu()) {
    host_ = source.clone();
    return;
  }
  const Tensor from = source.contiguous();
  host_ = Tensor::empty(from.shape(), TensorOptions().dtype(from.dtype()).pinned(true));
  SG_ON_CUDA(landed_ = cuda::copy_device_to_host_async(host_.data_ptr(), from.data_ptr(), from.nbytes(),
                                                       from.device().index, host_.storage()));
}

const Tensor& PendingRead::get() {
  SG_CHECK(defined(), "PendingRead: nothing was queued to read");
  if (landed_ != nullptr) {
    SG_ON_CUDA(cuda::wait_for(landed_));
    landed_.reset();
  }
  return host_;
}

}  // namespace sg
