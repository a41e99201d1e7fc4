package leaktest

import (
	"fmt"
	"path/filepath"
	"runtime"
)

// Site is a line of test code, as a report's culprit frame names it.
type Site struct {
	Func, File string
	Line       int
}

// LineBelow returns the site of the line after the caller's: put it right
// above the call that checks a connection out.
func LineBelow() Site {
	pc, file, line, _ := runtime.Caller(1)
	return Site{runtime.FuncForPC(pc).Name(), file, line + 1}
}

// String is the site as errors name it: file name and line.
func (s Site) String() string { return fmt.Sprintf("%s:%d", filepath.Base(s.File), s.Line) }

// Short is the site as reports name it: directory, file name and line.
func (s Site) Short() string {
	return fmt.Sprintf("%s/%s:%d", filepath.Base(filepath.Dir(s.File)), filepath.Base(s.File), s.Line)
}
