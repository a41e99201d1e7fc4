//go:build !go1.25

package goid

// knownOffset is the offset of runtime.g's goid field on Go 1.23 and 1.24,
// whose gobuf still had a ret word (seven words): 8 bytes further than on
// Go 1.25. Not a supported toolchain for this module; the self-check
// decides.
const knownOffset uintptr = 160
