// Internal to tensor/: picks the CPU or the CUDA kernel for a device.
//
//   if (device.is_cpu()) cpu::gelu_forward(...);
//   else SG_ON_CUDA(cuda::gelu_forward(..., cuda_stream(device)));
//
// In a build without CUDA, SG_ON_CUDA(...) compiles to an error a user can
// act on instead of the call, so CPU-only builds need no CUDA headers.
#pragma once

#include "kernels/error.h"
#include "tensor/device.h"

#ifdef SG_CUDA
#include "kernels/cuda/adamw.h"
#include "kernels/cuda/flash_attention.h"
#include "kernels/cuda/flash_attention_tc.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/loss.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/normalization.h"
#include "kernels/cuda/reduce.h"
#include "kernels/cuda/rng.h"
#include "kernels/cuda/runtime.h"
#define SG_ON_CUDA(...) __VA_ARGS__
#else
#define SG_ON_CUDA(...) ::sg::fail_without_cuda()
#endif

namespace sg {

[[noreturn]] inline void fail_without_cuda() {
  SG_FAIL("this build of shardgrad has no CUDA support; reconfigure with -DSG_CUDA=ON on a machine with the "
          "CUDA toolkit, or keep tensors on Device::cpu()");
}

#ifdef SG_CUDA
// The stream kernels for `device` run on (making it the current device).
inline cudaStream_t cuda_stream(Device device) { return cuda::current_stream(device.index); }
#endif

}  // namespace sg
