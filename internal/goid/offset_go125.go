//go:build go1.25

package goid

// knownOffset is the offset of runtime.g's goid field on Go 1.25, 1.26 and
// 1.27 (runtime/runtime2.go), on 64-bit platforms:
//
//	stack        stack    //   0 (lo, hi)
//	stackguard0  uintptr  //  16
//	stackguard1  uintptr  //  24
//	_panic       *_panic  //  32
//	_defer       *_defer  //  40
//	m            *m       //  48
//	sched        gobuf    //  56 (sp, pc, g, ctxt, lr, bp: 6 words)
//	syscallsp    uintptr  // 104
//	syscallpc    uintptr  // 112
//	syscallbp    uintptr  // 120
//	stktopsp     uintptr  // 128
//	param        unsafe.Pointer // 136
//	atomicstatus atomic.Uint32  // 144
//	stackLock    uint32   // 148
//	goid         uint64   // 152
//
// The self-check verifies it at init; a later release that moves the field
// is found by the self-check's scan or falls back to the slow path.
const knownOffset uintptr = 152
