package pgxleak_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/pgxleak/pgxleak/internal/testdriver"
)

// TestLeakOpenerHandoffAttributedToWaiter: with a pool of one, a goroutine
// waits while the only connection is out; that connection comes back bad,
// so database/sql's background opener connects a new one and hands it to
// the waiter, with no driver call on the waiter's goroutine until its query.
// The checkout must still be attributed to the waiter's line.
func TestLeakOpenerHandoffAttributedToWaiter(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(1), pgxleak.WithLeakThreshold(threshold), rec.Option())
	ctx := context.Background()
	holder, err := db.Conn(ctx)
	require.NoError(t, err)
	var firstPID int
	require.NoError(t, holder.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&firstPID))
	_, err = holder.ExecContext(ctx, "BEGIN") // makes it invalid on return
	require.NoError(t, err)
	waiterLine := make(chan site, 1)
	done := make(chan struct{})
	var rows *sql.Rows
	go func() {
		defer close(done)
		line := lineBelow()
		waiterLine <- line
		r, err := db.Query("SELECT pg_backend_pid()")
		if !assert.NoError(t, err) {
			return
		}
		rows = r
	}()
	line := <-waiterLine
	line.Line++
	pgtest.WaitFor(t, 5*time.Second, "the waiter to queue", func() bool { return db.Stats().WaitCount == 1 })
	holder.Close() // bad: closed, and the opener connects a new one for the waiter
	<-done
	require.NotNil(t, rows, "the waiter's query failed")
	defer rows.Close()
	l := rec.Wait(t, 5*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakSuspected && l.Culprit.Line == line.Line })
	assert.Equal(t, filepath.Base(line.File), filepath.Base(l.Culprit.File), "the culprit's file")
	assert.NotEqual(t, firstPID, int(l.BackendPID), "the report names the new connection's backend")
}

// handOff makes database/sql's background opener hand a connection to a
// waiting caller: with one connection allowed and one use per connection,
// the connection held is discarded at its return while a second caller
// waits, and the opener connects a new one for that caller. No driver call
// happens on the caller's goroutine. It returns the caller's *sql.Conn and
// when db.Conn returned it.
func handOff(t *testing.T, db *sql.DB) (*sql.Conn, time.Time) {
	t.Helper()
	ctx := context.Background()
	first, err := db.Conn(ctx)
	require.NoError(t, err)
	require.NoError(t, first.PingContext(ctx))
	type taken struct {
		c   *sql.Conn
		at  time.Time
		err error
	}
	got := make(chan taken, 1)
	waits := db.Stats().WaitCount
	go func() {
		c, err := db.Conn(ctx)
		got <- taken{c, time.Now(), err}
	}()
	pgtest.WaitFor(t, 10*time.Second, "the second caller to wait", func() bool { return db.Stats().WaitCount > waits })
	require.NoError(t, first.Close())
	tk := <-got
	require.NoError(t, tk.err)
	t.Cleanup(func() { _ = tk.c.Close() })
	return tk.c, tk.at
}

// openHandOff opens a pool in which every connection after the first is
// made by database/sql's background opener (see handOff).
func openHandOff(t *testing.T) *sql.DB {
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(1), pgxleak.WithMaxUses(1))
	return db
}

// TestCheckoutByBackgroundOpener: a connection the background opener hands
// to a waiting caller is listed by Checkouts, counted by Stats, and
// reported by Find and Drain before its first statement; neither Find nor
// Drain reports success while database/sql counts it in use.
func TestCheckoutByBackgroundOpener(t *testing.T) {
	db := openHandOff(t)
	_, takenAt := handOff(t, db)

	cs := checkouts(t, db)
	require.Len(t, cs, 1, "the one connection the opener handed out")
	require.True(t, cs[0].Unseen, "the connection the opener handed out is marked Unseen")
	require.Zero(t, cs[0].Culprit, "an unseen checkout has no culprit")
	assert.False(t, cs[0].CheckedOutAt.After(takenAt), "CheckedOutAt = %v, after db.Conn returned at %v: Held would understate", cs[0].CheckedOutAt, takenAt)
	st := stats(t, db)
	assert.EqualValues(t, 1, st.Unseen, "Stats' Unseen")
	assert.EqualValues(t, 1, st.InUse, "Stats' InUse")
	err := pgxleak.Find(db, pgxleak.WithGracePeriod(20*time.Millisecond))
	var le *pgxleak.LeakError
	require.ErrorAs(t, err, &le, "Find")
	require.Len(t, le.Checkouts, 1, "Find")
	require.ErrorContains(t, err, "background opener", "Find names the background opener's checkout")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = pgxleak.Drain(ctx, db)
	require.ErrorAs(t, err, &le, "Drain")
	require.Len(t, le.Checkouts, 1, "Drain")
	require.True(t, le.Checkouts[0].Unseen, "Drain lists the background opener's checkout")
}

// TestCheckoutByBackgroundOpenerRaw: the first use of such a connection
// through Raw and PgxConn (a COPY) is the checkout's culprit, and its Held
// counts from when the opener connected it, not from the first use.
func TestCheckoutByBackgroundOpenerRaw(t *testing.T) {
	db := openHandOff(t)
	ctx := context.Background()
	_, err := db.ExecContext(ctx, "CREATE TABLE copied (a int)")
	require.NoError(t, err)
	c, takenAt := handOff(t, db)
	time.Sleep(100 * time.Millisecond) // held before its first use
	var at site
	err = c.Raw(func(dc any) error {
		at = lineBelow()
		pc, ok := pgxleak.PgxConn(dc)
		if !ok {
			return errors.New("not a pgx connection")
		}
		_, err := pc.CopyFrom(ctx, pgx.Identifier{"copied"}, []string{"a"}, pgx.CopyFromRows([][]any{{1}}))
		return err
	})
	require.NoError(t, err)
	asked := time.Now()
	cs := checkouts(t, db)
	require.Len(t, cs, 1)
	require.False(t, cs[0].Unseen, "the connection is seen at its first use")
	co := cs[0]
	assert.Equal(t, fmt.Sprintf("%s:%d", at.File, at.Line), fmt.Sprintf("%s:%d", co.Culprit.File, co.Culprit.Line), "the culprit: the PgxConn call in Raw")
	assert.False(t, co.SeenAt.IsZero() || co.CheckedOutAt.After(takenAt) || co.Held < asked.Sub(takenAt),
		"CheckedOutAt = %v, SeenAt = %v, Held = %v; db.Conn returned %v ago: Held must bound it",
		co.CheckedOutAt, co.SeenAt, co.Held, asked.Sub(takenAt))
	assert.GreaterOrEqual(t, co.Held, 100*time.Millisecond, "it was held 100ms before its first use")
}

// TestCheckoutByBackgroundOpenerWaiterGaveUp: the opener connects for a
// waiter that gives up before the connection is ready, so the connection
// goes idle never reset; the next plain db.Conn takes it with no driver
// call at all. That checkout is listed, and Find does not pass.
func TestCheckoutByBackgroundOpenerWaiterGaveUp(t *testing.T) {
	fc := &testdriver.Connector{}
	db, err := pgxleak.OpenDB(fc, pgxleak.WithLogger(nil), pgxleak.WithMaxOpenConns(1), pgxleak.WithMaxUses(1))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	ctx := context.Background()
	first, err := db.Conn(ctx) // connected on this goroutine, before the gate
	require.NoError(t, err)
	fc.Gate = make(chan struct{}) // the opener's connect now waits
	wctx, cancel := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() { _, err := db.Conn(wctx); gaveUp <- err }()
	pgtest.WaitFor(t, 10*time.Second, "the waiter to queue", func() bool { return db.Stats().WaitCount == 1 })
	_ = first.Close() // used up: discarded, and the opener connects for the waiter
	pgtest.WaitFor(t, 10*time.Second, "the opener to connect", func() bool { return fc.Attempts.Load() == 2 })
	cancel()
	require.Error(t, <-gaveUp, "the waiter got a connection; want it to give up")
	close(fc.Gate)
	pgtest.WaitFor(t, 10*time.Second, "the opener's connection to go idle", func() bool { return db.Stats().Idle == 1 })

	c, err := db.Conn(ctx) // no driver call: the connection was never reset
	require.NoError(t, err)
	defer c.Close()
	cs := checkouts(t, db)
	require.Len(t, cs, 1, "the connection just taken")
	require.True(t, cs[0].Unseen, "the connection just taken is marked Unseen")
	assert.Error(t, pgxleak.Find(db, pgxleak.WithGracePeriod(0)), "Find passed with a connection out")
}

// openerCounter wraps a connector and counts the connects made by
// database/sql's background opener: each is a connection handed to a
// waiter with no driver call (or left idle, never reset).
type openerCounter struct {
	driver.Connector
	byOpener atomic.Int64
}

func (c *openerCounter) Connect(ctx context.Context) (driver.Conn, error) {
	var pcs [32]uintptr
	frames := runtime.CallersFrames(pcs[:runtime.Callers(1, pcs[:])])
	for f, more := frames.Next(); more; f, more = frames.Next() {
		if f.Function == "database/sql.(*DB).openNewConnection" {
			c.byOpener.Add(1)
			break
		}
	}
	return c.Connector.Connect(ctx)
}

// BenchmarkBlindHandoffs measures how often database/sql's background
// opener hands a connection over with no driver call, in a saturated pool
// (16 goroutines on 4 connections) whose connections reach their jittered
// lifetime (20ms here, jitter a tenth, as by default). It reports the
// handoffs per checkout and per connection lifetime: under saturation
// every connection discarded at its end of life is replaced by the opener
// for a waiter, so the count scales with connections × lifetimes elapsed,
// not with checkouts; at the default 30 minutes, a pool of N connections
// sees about N such handoffs per 28.5 minutes (the mean jittered lifetime).
func BenchmarkBlindHandoffs(b *testing.B) {
	const lifetime = 20 * time.Millisecond
	oc := &openerCounter{Connector: &testdriver.Connector{}}
	db, err := pgxleak.OpenDB(oc, pgxleak.WithLogger(nil), pgxleak.WithMaxOpenConns(4),
		pgxleak.WithConnMaxLifetime(lifetime))
	require.NoError(b, err)
	defer db.Close()
	ctx := context.Background()
	start := time.Now()
	b.SetParallelism(4) // 4 × GOMAXPROCS goroutines
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, err := db.Conn(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			_ = c.PingContext(ctx)
			_ = c.Close()
		}
	})
	elapsed := time.Since(start)
	blind := float64(oc.byOpener.Load())
	b.ReportMetric(blind/float64(b.N), "blind/checkout")
	lifetimes := 4 * elapsed.Seconds() / (lifetime - lifetime/20).Seconds() // 4 connections, mean jittered lifetime
	b.ReportMetric(blind/lifetimes, "blind/lifetime")
}

// pingInHelper and copyInHelper are the first use of a connection, in a
// helper, at another line than the one that took it.
//
//go:noinline
func pingInHelper(t *testing.T, c *sql.Conn) site {
	line := lineBelow()
	assert.NoError(t, c.PingContext(context.Background()))
	return line
}

//go:noinline
func copyInHelper(t *testing.T, c *sql.Conn) site {
	var line site
	err := c.Raw(func(dc any) error {
		line = lineBelow()
		pc, ok := pgxleak.PgxConn(dc) // the first use: PgxConn checks it out
		if !ok {
			return errors.New("not a pgx connection")
		}
		_, err := pc.CopyFrom(context.Background(), pgx.Identifier{"copied"}, []string{"a"}, pgx.CopyFromRows([][]any{{1}}))
		return err
	})
	assert.NoError(t, err)
	return line
}

// TestOpenerHandoffNamesTheLineThatAsked: a goroutine waits in db.Conn on
// a full pool of one; the connection held is used up at its return, so
// database/sql's background opener connects a new one and hands it over
// with no driver call on the waiter's goroutine, which first uses it later
// in a helper (a Ping, or a COPY through Raw). When a goroutine dump saw the
// goroutine wait (here Inspect's; the wait sampler's, otherwise), the
// checkout is named at the db.Conn line, with the first use beside it;
// when none did, at the first use, and the report says so.
func TestOpenerHandoffNamesTheLineThatAsked(t *testing.T) {
	for _, tc := range []struct {
		name string
		seen bool // a goroutine dump sees the waiter wait
		use  func(*testing.T, *sql.Conn) site
	}{
		{"Ping, waiter seen", true, pingInHelper},
		{"COPY through Raw, waiter seen", true, copyInHelper},
		{"Ping, waiter not seen", false, pingInHelper},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// No wait sampling: the only goroutine dumps are Inspect's.
			db, _ := openTest(t, pgxleak.WithMaxOpenConns(1), pgxleak.WithMaxUses(1), pgxleak.WithWaitSampleInterval(time.Hour))
			ctx := context.Background()
			_, err := db.ExecContext(ctx, "CREATE TABLE copied (a int)")
			require.NoError(t, err)
			first, err := db.Conn(ctx)
			require.NoError(t, err)
			require.NoError(t, first.PingContext(ctx))
			if !tc.seen {
				// A dump before the wait, and none while it lasts.
				_, err := pgxleak.Inspect(ctx, db)
				require.NoError(t, err)
			}

			type taken struct {
				c         *sql.Conn
				asked, at site
			}
			got, use := make(chan taken, 1), make(chan struct{})
			go func() {
				var tk taken
				tk.asked = lineBelow()
				c, err := db.Conn(ctx)
				if !assert.NoError(t, err) {
					close(got)
					return
				}
				tk.c = c
				<-use
				tk.at = tc.use(t, c)
				got <- tk
			}()
			if tc.seen {
				inspectUntil(t, db, "a goroutine dump with the waiter in it", func(in pgxleak.Inspection) bool { return len(in.Waiters) == 1 })
			} else {
				pgtest.WaitFor(t, 10*time.Second, "the waiter to queue", func() bool { return db.Stats().WaitCount == 1 })
			}
			require.NoError(t, first.Close()) // used up: the opener connects for the waiter
			close(use)
			tk, ok := <-got
			require.True(t, ok)
			defer tk.c.Close()

			cs := checkouts(t, db)
			require.Len(t, cs, 1)
			co := cs[0]
			require.False(t, co.SeenAt.IsZero(), "the checkout was seen late, at its first use: not the opener's handoff")
			assert.Equal(t, tk.at.Line, co.FirstUse.Line, "FirstUse %s, want the helper's line %s", co.FirstUse, tk.at)
			want := tk.at
			if tc.seen {
				want = tk.asked
			}
			assert.Equal(t, want.Line, co.Culprit.Line, "culprit %s, want %s", co.Culprit, want)
			assert.Equal(t, filepath.Base(want.File), filepath.Base(co.Culprit.File))
			assert.Equal(t, !tc.seen, co.AskUnseen)
			if tc.seen {
				assert.NotContains(t, co.String(), "first use")
			} else {
				assert.Contains(t, co.String(), "(its first use: database/sql's background opener handed it over, and no goroutine dump saw the line that asked for it)")
			}
		})
	}
}
