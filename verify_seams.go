package pgxleak

import (
	"io"
	"os"
)

// Seams for testing VerifyTestMain without exiting.
var (
	osExit             = os.Exit
	osStderr io.Writer = os.Stderr
)
