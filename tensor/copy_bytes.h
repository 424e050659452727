// One byte copy between any two devices (memcpy, or cudaMemcpy on the
// device's current stream, waiting for it so the bytes are there on return).
// Internal to tensor/: layers above copy with Tensor::to and Tensor::copy_.
#pragma once

#include <cstdint>

#include "tensor/device.h"

namespace sg {

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, int64_t bytes);

}  // namespace sg
