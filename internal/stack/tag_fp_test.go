//go:build !pgxleak_callers

package stack

const callersTag = false
