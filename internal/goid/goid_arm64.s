// Copyright 2026 The pgxleak Authors. Use of this source code is governed by
// the MIT license in the LICENSE file.

//go:build !pgxleak_nogoid

#include "textflag.h"

// g lives in R28 (g) on arm64 in every ABI.

// func ID() uint64
TEXT ·ID(SB),NOSPLIT|NOFRAME,$0-8
	MOVBU	·fast(SB), R0
	CBZ	R0, slow
	MOVD	·off(SB), R1
	ADD	R1, g, R2
	MOVD	(R2), R0		// g.goid
	MOVD	R0, ret+0(FP)
	RET
slow:
	// Same signature, same argument frame: slowID's result lands in ours.
	JMP	·slowID(SB)

// func load(off uintptr) uint64
TEXT ·load(SB),NOSPLIT|NOFRAME,$0-16
	MOVD	off+0(FP), R1
	ADD	R1, g, R2
	MOVD	(R2), R0		// *(g + off)
	MOVD	R0, ret+8(FP)
	RET
