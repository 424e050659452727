// A device tensor's values on their way to the host, read when needed.
//
// item() on a GPU tensor copies synchronously: the host waits until the GPU
// has done everything queued so far, so the GPU's queue drains and it sits
// idle while the host wakes up and queues more. PendingRead queues the copy
// instead (into pinned memory, in stream order) and returns at once; get()
// then waits for that copy only, not for what the host queued after it.
// Read it late, when the GPU has long passed the copy, and nothing waits.
//
//   PendingRead squares(total);   // queued after the kernels that make `total`
//   ... queue the rest of the step, and the next forward ...
//   double s = squares.item();    // the copy landed long ago: no drain
//
// (PyTorch's pattern: x.to("cpu", non_blocking=True) and an event.) On the
// CPU the values are copied at once. The pinned buffer is held until the
// copy has landed even if the PendingRead is dropped unread.
//
// Read next: optim/zero.cpp (fp16's overflow, read a step late).
#pragma once

#include <memory>

#include "tensor/tensor.h"

namespace sg {

class PendingRead {
 public:
  PendingRead() = default;
  explicit PendingRead(const Tensor& source);  // queues the copy

  bool defined() const { return host_.defined(); }
  // The values, on the CPU; waits for the copy the first time.
  const Tensor& get();
  double item() { return get().item(); }

 private:
  Tensor host_;
  std::shared_ptr<void> landed_;  // the copy's event (CUDA) until waited for
};

}  // namespace sg
