// SG_HOST_DEVICE marks small inline functions that both g++ (CPU kernels) and
// nvcc (CUDA kernels) compile, so a CPU kernel and its CUDA twin can share the
// exact arithmetic (kernels/philox.h, kernels/adamw_math.h).
#pragma once

#if defined(__CUDACC__)
#define SG_HOST_DEVICE __host__ __device__
#else
#define SG_HOST_DEVICE
#endif
