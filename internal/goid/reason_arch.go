//go:build !(amd64 || arm64) && !pgxleak_nogoid

package goid

const unsupportedReason = "no fast path on this architecture (only amd64 and arm64)"
