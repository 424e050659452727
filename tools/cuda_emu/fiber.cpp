// The fiber switch of fiber.h.
//
// x86-64 (System V): a switch pushes the registers a called function must
// preserve (rbx, rbp, r12-r15) and the SSE and x87 control words onto the
// running stack, stores the stack pointer, loads the other fiber's, and pops
// the same in reverse. Everything else is caller-saved, so the compiler has
// already saved what it needs around the call.
#include "tools/cuda_emu/fiber.h"

#include <cstdint>

namespace sg_emu {

#if defined(__x86_64__)

extern "C" void sg_emu_switch_stacks(void** save_stack_pointer, void* load_stack_pointer);

asm(R"(
  .text
  .globl sg_emu_switch_stacks
  .type sg_emu_switch_stacks, @function
sg_emu_switch_stacks:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size sg_emu_switch_stacks, .-sg_emu_switch_stacks
)");

void fiber_prepare(FiberContext& fiber, void* stack, size_t bytes, void (*entry)()) {
  // The first switch pops the frame built here and "returns" into entry with
  // the stack aligned as a call leaves it (rsp + 8 a multiple of 16).
  uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + bytes) & ~uintptr_t(15);
  uint64_t* frame = reinterpret_cast<uint64_t*>(top);
  *--frame = 0;                                      // entry's return address: none
  *--frame = reinterpret_cast<uint64_t>(entry);      // popped by ret
  for (int i = 0; i < 6; ++i) *--frame = 0;          // rbp, rbx, r12-r15
  uint32_t control_words[2];
  asm volatile("stmxcsr %0" : "=m"(control_words[0]));
  asm volatile("fnstcw %0" : "=m"(control_words[1]));
  *--frame = uint64_t(control_words[0]) | (uint64_t(control_words[1]) << 32);
  fiber.stack_pointer = frame;
}

void fiber_switch(FiberContext& from, FiberContext& to) { sg_emu_switch_stacks(&from.stack_pointer, to.stack_pointer); }

#else

void fiber_prepare(FiberContext& fiber, void* stack, size_t bytes, void (*entry)()) {
  getcontext(&fiber.context);
  fiber.context.uc_stack.ss_sp = stack;
  fiber.context.uc_stack.ss_size = bytes;
  fiber.context.uc_link = nullptr;
  makecontext(&fiber.context, entry, 0);
}

void fiber_switch(FiberContext& from, FiberContext& to) { swapcontext(&from.context, &to.context); }

#endif

}  // namespace sg_emu
