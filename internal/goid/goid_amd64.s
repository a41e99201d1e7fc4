// Copyright 2026 The pgxleak Authors. Use of this source code is governed by
// the MIT license in the LICENSE file.

//go:build !pgxleak_nogoid

#include "textflag.h"

// The runtime keeps the current g in thread-local storage. ABI0 code
// cannot rely on R14 holding g (only ABIInternal code can), so these read
// it from TLS as the runtime's own ABI0 assembly does.

// func ID() uint64
TEXT ·ID(SB),NOSPLIT|NOFRAME,$0-8
	CMPB	·fast(SB), $0
	JEQ	slow
	MOVQ	·off(SB), BX
	MOVQ	TLS, CX
	MOVQ	0(CX)(TLS*1), AX	// AX = g
	MOVQ	0(AX)(BX*1), AX		// g.goid
	MOVQ	AX, ret+0(FP)
	RET
slow:
	// Same signature, same argument frame: slowID's result lands in ours.
	JMP	·slowID(SB)

// func load(off uintptr) uint64
TEXT ·load(SB),NOSPLIT|NOFRAME,$0-16
	MOVQ	off+0(FP), BX
	MOVQ	TLS, CX
	MOVQ	0(CX)(TLS*1), AX	// AX = g
	MOVQ	0(AX)(BX*1), AX		// *(g + off)
	MOVQ	AX, ret+8(FP)
	RET
