// What the emulator's host runtime (runtime.cpp) tells its other fakes.
#pragma once

#include <cstddef>

namespace sg_emu {

// True when [pointer, pointer + bytes) lies inside one cudaMalloc'd buffer.
bool is_device_memory(const void* pointer, size_t bytes);

}  // namespace sg_emu
