//go:build pgxleak_nogoid

package goid

const unsupportedReason = "fast path compiled out by the build tag pgxleak_nogoid"
