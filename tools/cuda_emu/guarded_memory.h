// Memory that faults one element past its end (or, with SG_EMU_GUARD=front,
// one element before its start): every device allocation, shared array and
// fiber stack of the emulator comes from here.
#pragma once

#include <cstddef>

namespace sg_emu {

struct GuardedMapping {
  char* mapping = nullptr;  // what mmap returned
  size_t mapped = 0;
  char* data = nullptr;     // the usable bytes
};

// `bytes` aligned to `alignment`, ending right at an unmapped page, or with
// SG_EMU_GUARD=front starting right after one (scripts/test.sh's second pass
// uses that, so an index below zero shows too). Returns data nullptr when the
// system is out of memory.
GuardedMapping map_guarded(size_t bytes, size_t alignment);

// A fiber's stack: the unmapped page below it catches an overflow.
GuardedMapping map_stack(size_t bytes);

void unmap(const GuardedMapping& memory);

}  // namespace sg_emu
