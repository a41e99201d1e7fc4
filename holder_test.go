package pgxleak_test

import (
	"context"
	"database/sql"
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
		if c.Culprit.Line == line.line && strings.HasSuffix(c.Culprit.File, "_test.go") {
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
		assert.Contains(t, c.String(), line.short(), "the checkout names the line")
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
		return ok && c.Holder != nil && c.Holder.At.Line == l[1].line && c.Holder.State == "chan receive"
	})
	c, _ := checkoutAtLine(in, l[0])
	h := c.Holder
	assert.False(t, h.Exited, "holder %+v: want alive", h)
	assert.Equal(t, "chan receive", h.State)
	assert.Equal(t, "goroutine id", h.MatchedBy)
	assert.Contains(t, c.String(), l[1].short()+" [chan receive]")
	assert.Contains(t, c.String(), "; goroutine ")
	if assert.NotNil(t, c.Server, "the server view") {
		assert.Equal(t, "idle in transaction", c.Server.State)
	}
	assert.Contains(t, c.String(), "; server: idle in transaction", "the server's verdict")
}
