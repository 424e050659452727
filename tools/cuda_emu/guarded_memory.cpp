// The guard pages of guarded_memory.h.
#include "tools/cuda_emu/guarded_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace sg_emu {
namespace {

size_t page_size() { return size_t(sysconf(_SC_PAGESIZE)); }

bool guard_in_front() {
  static const bool front = [] {
    const char* setting = std::getenv("SG_EMU_GUARD");
    return setting != nullptr && std::strcmp(setting, "front") == 0;
  }();
  return front;
}

GuardedMapping map_with_guard(size_t bytes, size_t alignment, bool guard_below) {
  const size_t page = page_size();
  const size_t rounded = (bytes + alignment - 1) / alignment * alignment;
  const size_t usable = (rounded + page - 1) / page * page;
  GuardedMapping memory;
  memory.mapped = usable + page;
  void* mapping = mmap(nullptr, memory.mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
  if (mapping == MAP_FAILED) return GuardedMapping{};
  memory.mapping = static_cast<char*>(mapping);
  if (guard_below) {
    mprotect(memory.mapping, page, PROT_NONE);
    memory.data = memory.mapping + page;
  } else {
    mprotect(memory.mapping + usable, page, PROT_NONE);
    memory.data = memory.mapping + usable - rounded;
  }
  return memory;
}

}  // namespace

GuardedMapping map_guarded(size_t bytes, size_t alignment) {
  return map_with_guard(bytes, alignment, guard_in_front());
}

GuardedMapping map_stack(size_t bytes) { return map_with_guard(bytes, 16, true); }

void unmap(const GuardedMapping& memory) {
  if (memory.mapping != nullptr) munmap(memory.mapping, memory.mapped);
}

}  // namespace sg_emu
