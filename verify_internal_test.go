package pgxleak

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
)

type fakeM struct{ code int }

func (m fakeM) Run() int { return m.code }

// TestVerifyTestMain runs VerifyTestMain with the exit and stderr seams
// swapped, around a pool with a connection still out.
func TestVerifyTestMain(t *testing.T) {
	var exitCode int
	var stderr bytes.Buffer
	defer func(exit func(int), w io.Writer) { osExit, osStderr = exit, w }(osExit, osStderr)
	osExit = func(code int) { exitCode = code }
	osStderr = &stderr

	db, err := OpenDB(nopConnector{}, WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		runCode  int
		want     int
		reported bool
	}{
		{"tests failed: exit with their code, no check", 3, 3, false},
		{"tests passed, connection out", 0, 1, true},
	} {
		exitCode, stderr = -1, bytes.Buffer{}
		VerifyTestMain(fakeM{tc.runCode}, GracePeriod(0))
		if exitCode != tc.want || strings.Contains(stderr.String(), "still checked out") != tc.reported {
			t.Errorf("%s: exit %d, stderr %q", tc.name, exitCode, stderr.String())
		}
		if tc.reported && !strings.Contains(stderr.String(), "verify_internal_test.go") {
			t.Errorf("%s: the report does not name the culprit: %s", tc.name, stderr.String())
		}
	}
	c.Close()
	exitCode = -1
	VerifyTestMain(fakeM{0}, GracePeriod(0))
	if exitCode != 0 {
		t.Fatalf("exit %d after the connection came back; stderr %q", exitCode, stderr.String())
	}
}
