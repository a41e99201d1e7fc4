package pgxleak_test

import (
	"context"
	"database/sql"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// inspectUntil polls Inspect until cond holds (the goroutine dump is taken
// at most once a second, so a change shows within about a second).
func inspectUntil(t *testing.T, db *sql.DB, msg string, cond func(pgxleak.Inspection) bool) pgxleak.Inspection {
	t.Helper()
	var in pgxleak.Inspection
	pgtest.WaitFor(t, 10*time.Second, msg, func() bool {
		var err error
		in, err = pgxleak.Inspect(context.Background(), db)
		require.NoError(t, err, "Inspect")
		return cond(in)
	})
	return in
}

// checkoutAtLine returns the inspection's checkout taken at line.
func checkoutAtLine(in pgxleak.Inspection, line site) (pgxleak.Checkout, bool) {
	for _, c := range in.Checkouts {
		if c.Culprit.Line == line.Line && strings.HasSuffix(c.Culprit.File, "_test.go") {
			return c, true
		}
	}
	return pgxleak.Checkout{}, false
}

func TestHolderExited(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, rec.Option())
	type leaked struct {
		rows             *sql.Rows
		tx               *sql.Tx
		rowsLine, txLine site
	}
	got := make(chan leaked)
	go func() { // a handler that returns without closing its Rows or ending its Tx
		var l leaked
		var err error
		l.rowsLine = lineBelow()
		l.rows, err = db.Query("SELECT 1")
		assert.NoError(t, err)
		l.txLine = lineBelow()
		l.tx, err = db.Begin()
		assert.NoError(t, err)
		got <- l
	}()
	l := <-got // kept reachable, so the Rows is not garbage-collected
	defer l.rows.Close()
	defer l.tx.Rollback()

	in := inspectUntil(t, db, "both holders shown as exited", func(in pgxleak.Inspection) bool {
		n := 0
		for _, c := range in.Checkouts {
			if c.Holder != nil && c.Holder.Exited {
				n++
			}
		}
		return n == 2
	})
	for _, line := range []site{l.rowsLine, l.txLine} {
		c, ok := checkoutAtLine(in, line)
		require.True(t, ok, "no checkout at %v in %+v", line, in.Checkouts)
		assert.Equal(t, "goroutine id", c.Holder.MatchedBy, "holder %+v", c.Holder)
		assert.NotZero(t, c.Holder.ID, "holder %+v", c.Holder)
		assert.Contains(t, c.String(), line.Short(), "the checkout names the line")
		assert.Contains(t, c.String(), "; goroutine exited", "the checkout's verdict")
	}
	assert.Empty(t, in.Waiters)

	// The report made when the pool is closed says so too.
	require.NoError(t, db.Close())
	r := rec.Wait(t, 5*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakStillOut })
	if assert.NotNil(t, r.Holder, "the still-out report's holder") {
		assert.True(t, r.Holder.Exited, "holder %+v: want goroutine exited", r.Holder)
	}
	assert.Contains(t, r.String(), "goroutine exited")
}

func TestHolderAlive(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, rec.Option())
	release := make(chan struct{})
	done := make(chan error)
	lines := make(chan [2]site, 1)
	go func() {
		txLine := lineBelow()
		tx, err := db.Begin()
		if err != nil {
			done <- err
			return
		}
		defer tx.Rollback()
		if _, err := tx.Exec("SELECT 1"); err != nil {
			done <- err
			return
		}
		lines <- [2]site{txLine, lineBelow()}
		<-release
		done <- nil
	}()
	l := <-lines
	defer func() {
		close(release)
		assert.NoError(t, <-done)
	}()
	in := inspectUntil(t, db, "the holder blocked on the channel", func(in pgxleak.Inspection) bool {
		c, ok := checkoutAtLine(in, l[0])
		return ok && c.Holder != nil && c.Holder.At.Line == l[1].Line && c.Holder.State == "chan receive"
	})
	c, _ := checkoutAtLine(in, l[0])
	h := c.Holder
	assert.False(t, h.Exited, "holder %+v: want alive", h)
	assert.Equal(t, "chan receive", h.State)
	assert.Equal(t, "goroutine id", h.MatchedBy)
	assert.False(t, h.Returned, "holder %+v: marked Returned while still inside the function that took the connection", h)
	s := c.String()
	assert.Contains(t, s, "alive, still inside pgxleak_test.TestHolderAlive.func1, now at "+l[1].Short())
	if i := strings.Index(s, "; server:"); assert.GreaterOrEqual(t, i, 0, "checkout %q: the server's verdict", s) {
		assert.True(t, strings.HasSuffix(s[:i], " [chan receive]"), "checkout %q: the state", s)
	}
	if assert.NotNil(t, c.Server, "the server view") {
		assert.Equal(t, "idle in transaction", c.Server.State)
	}
	assert.Contains(t, c.String(), "; server: idle in transaction", "the server's verdict")
}

// Helpers that take a connection and return without releasing it. keep is
// the test's, so that nothing is garbage-collected; the verdict cannot
// know it, and says "unless it handed the Rows/Tx/Conn on".

//go:noinline
func takeRows(t *testing.T, db *sql.DB, keep *func() error) site {
	line := lineBelow()
	rows, err := db.Query("SELECT 1")
	if !assert.NoError(t, err) {
		return line
	}
	*keep = rows.Close
	return line
}

//go:noinline
func takeTx(t *testing.T, db *sql.DB, keep *func() error) site {
	line := lineBelow()
	tx, err := db.Begin()
	if !assert.NoError(t, err) {
		return line
	}
	*keep = tx.Rollback
	return line
}

//go:noinline
func takeConn(t *testing.T, db *sql.DB, keep *func() error) site {
	line := lineBelow()
	c, err := db.Conn(context.Background())
	if !assert.NoError(t, err) {
		return line
	}
	*keep = c.Close
	return line
}

// TestHolderReturned: a helper takes a Rows, a Tx or a Conn and returns
// without releasing it while its caller goes on. The holder is alive, but
// the function that took the connection has returned: the verdict says so,
// not where the caller is now (unrelated work), in Inspect and in the
// report made at Close.
func TestHolderReturned(t *testing.T) {
	for _, tc := range []struct {
		name, helper string
		take         func(*testing.T, *sql.DB, *func() error) site
	}{
		{"Rows", "takeRows", takeRows},
		{"Tx", "takeTx", takeTx},
		{"Conn", "takeConn", takeConn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &leaktest.Recorder{}
			db, _ := openTest(t, rec.Option())
			release := func() error { return nil }
			taken, goOn, done := make(chan site), make(chan struct{}), make(chan struct{})
			go func() {
				defer close(done)
				taken <- tc.take(t, db, &release)
				<-goOn // the caller goes on with other work
			}()
			line := <-taken
			defer func() {
				close(goOn)
				<-done
				assert.NoError(t, release())
			}()
			want := "is alive, but the function that took it (pgxleak_test." + tc.helper +
				") has returned without releasing it; unless it handed the Rows/Tx/Conn on, this is a leak"
			in := inspectUntil(t, db, "the holder seen back in its caller", func(in pgxleak.Inspection) bool {
				c, ok := checkoutAtLine(in, line)
				return ok && c.Holder != nil && c.Holder.Returned
			})
			c, _ := checkoutAtLine(in, line)
			assert.False(t, c.Holder.Exited)
			assert.Contains(t, c.String(), want)
			assert.NotContains(t, c.String(), "now at", "the caller's current line is unrelated to the leak")

			require.NoError(t, db.Close())
			r := rec.Wait(t, 5*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakStillOut })
			assert.Contains(t, r.String(), want)
		})
	}
}

// TestHolderGarbageCollectedRows: a Rows that was garbage-collected has no
// holder, even while the goroutine that took it lives on: the report made
// when the pool is drained names no goroutine.
func TestHolderGarbageCollectedRows(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, rec.Option())
	line := leakRows(t, db)
	pgtest.WaitFor(t, 10*time.Second, "a garbage-collection report", func() bool {
		runtime.GC()
		return rec.Has(func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakGarbageCollected && isCulprit(line)(l) })
	})
	dctx, dcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer dcancel()
	require.Error(t, pgxleak.Drain(dctx, db))
	r := rec.Wait(t, 5*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakStillOut })
	assert.Nil(t, r.Holder, "holder of a garbage-collected Rows")
	assert.NotContains(t, r.String(), "goroutine")
	assert.Contains(t, r.String(), "Rows garbage-collected")
}
