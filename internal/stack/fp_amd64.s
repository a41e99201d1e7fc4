// Copyright 2026 The pgxleak Authors.
// SPDX-License-Identifier: MIT
// Use of this source code is governed by the MIT licence in the LICENSE file.

//go:build !pgxleak_callers

#include "textflag.h"

// func frame() (fp unsafe.Pointer, lo, hi uintptr)
//
// frame returns the frame pointer register (BP) as its caller sees it, and
// the bounds [lo, hi) of the current goroutine's stack, read from the first
// two words of the runtime's g (g.stack.lo, g.stack.hi: an offset fixed by
// the runtime for runtime/cgo's C code). NOFRAME and a zero-size frame mean
// the assembler pushes nothing, so BP is untouched.
TEXT ·frame(SB),NOSPLIT|NOFRAME,$0-24
	MOVQ	BP, fp+0(FP)
	MOVQ	TLS, CX
	MOVQ	0(CX)(TLS*1), AX	// AX = g
	MOVQ	0(AX), BX		// g.stack.lo
	MOVQ	BX, lo+8(FP)
	MOVQ	8(AX), BX		// g.stack.hi
	MOVQ	BX, hi+16(FP)
	RET
