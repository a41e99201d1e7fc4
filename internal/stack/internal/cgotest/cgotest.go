//go:build cgo

// Package cgotest runs Go code called back from C, on the calling
// goroutine's thread and on a thread C created, for the stack package's
// tests of frame-pointer unwinding across cgo frames.
package cgotest

/*
#include <stdint.h>
void cgotestCall(uintptr_t h);
void cgotestCallFromThread(uintptr_t h);
void cgotestCallGarbageFP(uintptr_t h);
*/
import "C"

import "runtime/cgo"

//export cgotestCallback
func cgotestCallback(h C.uintptr_t) {
	cgo.Handle(h).Value().(func())()
}

// Call calls f from C, on the current goroutine: Go → C → Go.
func Call(f func()) {
	h := cgo.NewHandle(f)
	defer h.Delete()
	C.cgotestCall(C.uintptr_t(h))
}

// CallGarbageFP calls f from C code that has put garbage in the frame
// pointer register (on amd64; elsewhere like Call).
func CallGarbageFP(f func()) {
	h := cgo.NewHandle(f)
	defer h.Delete()
	C.cgotestCallGarbageFP(C.uintptr_t(h))
}

// CallFromThread calls f from a thread that C creates, and waits for it.
func CallFromThread(f func()) {
	h := cgo.NewHandle(f)
	defer h.Delete()
	C.cgotestCallFromThread(C.uintptr_t(h))
}
