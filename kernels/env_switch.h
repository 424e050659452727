// The on/off switches read from the environment (SG_CUBLASLT,
// SG_FLASH_TENSOR_CORES, SG_GEMM_POINTER_ARRAYS, SG_CPU_CACHE,
// SG_CUDA_CACHE, SG_LAYERNORM_FUSED_BACKWARD, ...; docs/gpu.md lists them):
// each is on unless set to 0, so a user turns off a fast path to compare or
// to work around it, and nothing needs setting otherwise.
#pragma once

#include <array>
#include <cstdlib>
#include <string>

namespace sg {

inline bool env_switch_on(const char* variable) {
  const char* setting = std::getenv(variable);
  return setting == nullptr || std::string(setting) != "0";
}

// The few paths that are off until measured on a GPU (SG_GEMM_GELU_EPILOGUE):
// on only when set to 1.
inline bool env_switch_opted_in(const char* variable) {
  const char* setting = std::getenv(variable);
  return setting != nullptr && std::string(setting) == "1";
}

// The switches read at each call (not once a process), so one process can
// run both sides of each: bench_gpt --variants times them in turn and
// refuses any other. A switch moved from "once" to "per call" joins here.
inline constexpr std::array<const char*, 13> kSwitchesReadAtEachCall = {
    "SG_ATTENTION",
    "SG_FLASH_TENSOR_CORES",
    "SG_FLASH_FORWARD_MORE_WARPS",
    "SG_FLASH_BACKWARD_MORE_WARPS",
    "SG_FLASH_FUSED_DQ",
    "SG_FLASH_WGMMA",
    "SG_FLASH_WGMMA_OVERLAP",
    "SG_FUSED_CROSS_ENTROPY",
    "SG_LAYERNORM_FUSED_BACKWARD",
    "SG_LAYERNORM_PIPELINED_BACKWARD",
    "SG_GEMM_GELU_EPILOGUE",
    "SG_GEMM_BIAS_GRAD_EPILOGUE",
    "SG_GEMM_AUTOTUNE",
};

}  // namespace sg
