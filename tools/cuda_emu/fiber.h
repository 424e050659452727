// Fibers for the SIMT emulator (simt.cpp): each emulated CUDA thread has its
// own stack, and switching between them is a handful of register moves. On
// x86-64 that is our own switch (fiber.cpp): glibc's swapcontext also saves
// the signal mask, a system call per switch, which made the emulator spend
// nine tenths of its time in the kernel. Elsewhere ucontext does the job.
#pragma once

#include <cstddef>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace sg_emu {

struct FiberContext {
#if defined(__x86_64__)
  void* stack_pointer = nullptr;  // where the switch saved the callee-saved registers
#else
  ucontext_t context;
#endif
};

// Makes `fiber` start entry() on [stack, stack + bytes) when first switched
// to. entry must never return: it ends by switching away for good.
void fiber_prepare(FiberContext& fiber, void* stack, size_t bytes, void (*entry)());

// Saves the running context in `from` and resumes `to`; returns when
// something switches back to `from`.
void fiber_switch(FiberContext& from, FiberContext& to);

}  // namespace sg_emu
