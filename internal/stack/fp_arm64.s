// Copyright 2026 The pgxleak Authors.
// SPDX-License-Identifier: MIT
// Use of this source code is governed by the MIT licence in the LICENSE file.

//go:build !pgxleak_callers

#include "textflag.h"

// func frame() (fp unsafe.Pointer, lo, hi uintptr)
//
// frame returns the frame pointer register (R29) as its caller sees it, and
// the bounds [lo, hi) of the current goroutine's stack, read from the first
// two words of the runtime's g (g.stack.lo, g.stack.hi: an offset fixed by
// the runtime for runtime/cgo's C code). g lives in R28 on arm64. NOFRAME
// and a zero-size frame mean the assembler saves nothing, so R29 is
// untouched.
TEXT ·frame(SB),NOSPLIT|NOFRAME,$0-24
	MOVD	R29, R0
	MOVD	R0, fp+0(FP)
	MOVD	0(g), R1		// g.stack.lo
	MOVD	R1, lo+8(FP)
	MOVD	8(g), R2		// g.stack.hi
	MOVD	R2, hi+16(FP)
	RET
