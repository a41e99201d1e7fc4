package leaktest

import "go.uber.org/goleak"

// LeftGoroutines is a TestMain's check, after the tests passed, that no
// goroutine leaked (goleak.Find). The goroutines that database/sql
// strands for the Tx and Rows a test leaks on purpose, and the opener of
// a pool leaked on purpose, are expected.
func LeftGoroutines() error {
	return goleak.Find(
		goleak.IgnoreTopFunction("database/sql.(*Tx).awaitDone"),
		goleak.IgnoreTopFunction("database/sql.(*Rows).awaitDone"),
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}
