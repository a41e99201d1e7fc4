//go:build cgo

#include <pthread.h>
#include <stdint.h>
#include "_cgo_export.h"

void cgotestCall(uintptr_t h) {
	cgotestCallback(h);
}

// cgotestCallGarbageFP calls back into Go with a garbage frame pointer
// register, as C code built with -fomit-frame-pointer may leave it. Where
// that is not written for the architecture, it calls back normally.
void cgotestCallGarbageFP(uintptr_t h) {
#if defined(__x86_64__)
	__asm__ volatile(
		"movq %%rsp, %%r12\n\t"
		"subq $128, %%rsp\n\t" // stay clear of the red zone
		"andq $-16, %%rsp\n\t"
		"pushq %%rbp\n\t"
		"subq $8, %%rsp\n\t" // 16-byte aligned at the call
		"movabsq $0x00007ffdeadbeef0, %%rbp\n\t"
		"call cgotestCallback\n\t"
		"addq $8, %%rsp\n\t"
		"popq %%rbp\n\t"
		"movq %%r12, %%rsp\n\t"
		:
		: "D"(h)
		: "rax", "rcx", "rdx", "rsi", "r8", "r9", "r10", "r11", "r12", "memory", "cc",
		  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
		  "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
#else
	cgotestCallback(h);
#endif
}

static void *cgotestThread(void *arg) {
	cgotestCallback((uintptr_t)arg);
	return 0;
}

void cgotestCallFromThread(uintptr_t h) {
	pthread_t t;
	pthread_create(&t, 0, cgotestThread, (void *)h);
	pthread_join(t, 0);
}
