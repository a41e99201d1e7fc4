package pgxleak

import "strconv"

// numbered writes n with the noun that agrees with it: "0 connections",
// "1 connection", "2 connections". Every message with a count goes through
// it.
func numbered(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}
