package pgxleak_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/stack"
	"github.com/pgxleak/pgxleak/internal/testdriver"
)

// The benchmarks compare pgxleak with the plain database/sql pool it wraps,
// in the same run, under names benchstat can pivot on:
//
//	go test -run '^$' -bench . -benchmem -count 6 . | tee bench.txt
//	benchstat -col /impl bench.txt          # pgxleak configurations against plain
//	benchstat -col /pool -filter /impl:plain bench.txt  # pooled against a connection per query
//
// See BENCHMARKS.md for the results and how to read them. Nothing here
// asserts on timing. Setup asserts with testify; inside a timed loop an
// error is checked with a plain if and b.Fatal, since require's t.Helper
// calls (runtime.Callers under a lock) would add to every iteration.

// benchImpl is one way to open a pool over a connector.
type benchImpl struct {
	name  string
	plain bool             // sql.OpenDB, no pgxleak
	opts  []pgxleak.Option // pgxleak options beyond the common ones
	fp    bool             // frame-pointer unwinding (the default); false forces runtime.Callers
}

var (
	implPlain   = benchImpl{name: "plain", plain: true, fp: true}
	implStack32 = benchImpl{name: "stack32", fp: true} // the defaults: 32 frames on every checkout
	implCallers = benchImpl{name: "stack32-callers"}   // the same with runtime.Callers instead of frame pointers
	implSampled = benchImpl{name: "sampled16", opts: []pgxleak.Option{pgxleak.WithStackSampling(16)}, fp: true}
	implNoStack = benchImpl{name: "nostack", opts: []pgxleak.Option{pgxleak.WithStackDepth(0)}, fp: true}
)

// fakeImpls are compared on the in-memory driver; the real server is
// compared plain against the defaults.
var fakeImpls = []benchImpl{implPlain, implStack32, implCallers, implSampled, implNoStack}

// openPool opens a pool of maxOpen connections over connector, plain or
// through pgxleak, with the same database/sql settings: the plain pool gets
// through its own setters what pgxleak's Open applies with them, pgxleak's
// default lifetime and idle time included, since database/sql checks them
// on every checkout.
func openPool(tb testing.TB, impl benchImpl, connector driver.Connector, maxOpen, maxIdle int) *sql.DB {
	tb.Helper()
	var db *sql.DB
	if impl.plain {
		db = sql.OpenDB(connector)
		db.SetMaxOpenConns(maxOpen)
		db.SetMaxIdleConns(maxIdle)
		db.SetConnMaxLifetime(pgxleak.DefaultConnMaxLifetime)
		db.SetConnMaxIdleTime(pgxleak.DefaultConnMaxIdleTime)
	} else {
		opts := append([]pgxleak.Option{
			pgxleak.WithLogger(quiet),
			pgxleak.WithMaxOpenConns(maxOpen),
		}, impl.opts...)
		var err error
		db, err = pgxleak.OpenDB(connector, opts...)
		require.NoError(tb, err)
		db.SetMaxIdleConns(maxIdle)
	}
	tb.Cleanup(func() { _ = db.Close() })
	return db
}

// use sets the process-wide unwinding mode for impl until the benchmark ends.
func (impl benchImpl) use(tb testing.TB) {
	was := stack.SetFramePointers(impl.fp)
	tb.Cleanup(func() { stack.SetFramePointers(was) })
}

// warm opens n connections at once and returns them idle, so that no
// benchmark loop pays for connecting.
func warm(tb testing.TB, db *sql.DB, n int) {
	tb.Helper()
	ctx := context.Background()
	conns := make([]*sql.Conn, n)
	for i := range conns {
		c, err := db.Conn(ctx)
		require.NoError(tb, err)
		require.NoError(tb, c.PingContext(ctx))
		conns[i] = c
	}
	for _, c := range conns {
		_ = c.Close()
	}
}

// benchOp is one pool operation: a checkout, some work, a return.
type benchOp struct {
	name string
	run  func(ctx context.Context, db *sql.DB) error
}

var fakeOps = []benchOp{
	{"exec", func(ctx context.Context, db *sql.DB) error { // checkout + Exec + return
		_, err := db.ExecContext(ctx, "UPDATE t SET n = n + 1")
		return err
	}},
	{"query", func(ctx context.Context, db *sql.DB) error { // checkout + Query + one-row Scan + return
		var n int64
		return db.QueryRowContext(ctx, "SELECT n FROM t").Scan(&n)
	}},
	{"tx", func(ctx context.Context, db *sql.DB) error { // checkout + Begin + Commit + return
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		return tx.Commit()
	}},
	{"conn", func(ctx context.Context, db *sql.DB) error { // checkout + return, nothing else
		c, err := db.Conn(ctx)
		if err != nil {
			return err
		}
		return c.Close()
	}},
}

// BenchmarkFake measures the pure overhead: database/sql over the
// in-memory driver, one goroutine, pool of 10.
func BenchmarkFake(b *testing.B) {
	for _, op := range fakeOps {
		for _, impl := range fakeImpls {
			b.Run("op="+op.name+"/impl="+impl.name, func(b *testing.B) {
				impl.use(b)
				db := openPool(b, impl, &testdriver.Connector{}, 10, 10)
				warm(b, db, 1)
				ctx := context.Background()
				b.ReportAllocs()
				defer cpuTime(b)()
				for b.Loop() {
					if err := op.run(ctx, db); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkBudget measures the four paths pgxleak's performance budget
// names, each against plain database/sql configured the same way, in the
// same run, over the in-memory driver and a pool of 10:
//
//   - path=queryrow: db.QueryRow(q).Scan(&n), on the Background context
//     (so pgxleak watches the Rows for garbage collection);
//   - path=deadline: QueryContext on a context with a deadline, Next, Scan,
//     Close;
//   - path=conn: db.Conn(ctx) then Close, a bare checkout and return;
//   - path=par50: QueryRow+Scan from 50 goroutines.
//
// set= says how both pools are configured; plain gets through its own
// setters what pgxleak's Open applies, so that each ratio is against the
// pool a user would have without pgxleak:
//
//   - set=open: pgxleak's defaults (10 open, 10 idle, a 30-minute lifetime,
//     jittered, and a 5-minute idle time); database/sql enforces the
//     lifetime, so both read the clock for it at every checkout and return;
//   - set=lifetime0: the same, then db.SetConnMaxLifetime(0) on both, as a
//     user who wants no lifetime calls it (database/sql's default): no
//     lifetime check, and pgxleak's jitter is off.
func BenchmarkBudget(b *testing.B) {
	paths := []struct {
		name string
		par  int // goroutines; 0 runs on the benchmark's own
		run  func(ctx context.Context, db *sql.DB) error
	}{
		{"queryrow", 0, func(_ context.Context, db *sql.DB) error {
			var n int64
			return db.QueryRow("SELECT n FROM t").Scan(&n)
		}},
		{"deadline", 0, func(ctx context.Context, db *sql.DB) error {
			rows, err := db.QueryContext(ctx, "SELECT n FROM t")
			if err != nil {
				return err
			}
			var n int64
			for rows.Next() {
				if err := rows.Scan(&n); err != nil {
					_ = rows.Close()
					return err
				}
			}
			return rows.Close()
		}},
		{"conn", 0, fakeOps[3].run},
		{"par50", 50, func(_ context.Context, db *sql.DB) error {
			var n int64
			return db.QueryRow("SELECT n FROM t").Scan(&n)
		}},
	}
	sets := []struct {
		name string
		set  func(db *sql.DB) // the user's calls after opening, on both pools
	}{
		{"open", func(*sql.DB) {}},
		{"lifetime0", func(db *sql.DB) { db.SetConnMaxLifetime(0) }},
	}
	for _, path := range paths {
		for _, set := range sets {
			for _, impl := range []benchImpl{implPlain, implStack32} {
				if !impl.plain {
					impl.name = "pgxleak"
				}
				b.Run("path="+path.name+"/set="+set.name+"/impl="+impl.name, func(b *testing.B) {
					impl.use(b)
					db := openPool(b, impl, &testdriver.Connector{}, 10, 10)
					set.set(db)
					warm(b, db, 10)
					ctx := context.Background()
					if path.name == "deadline" {
						var cancel context.CancelFunc
						ctx, cancel = context.WithTimeout(ctx, time.Hour)
						defer cancel()
					}
					b.ReportAllocs()
					defer cpuTime(b)()
					if path.par == 0 {
						for b.Loop() {
							if err := path.run(ctx, db); err != nil {
								b.Fatal(err)
							}
						}
						return
					}
					b.SetParallelism(max(1, path.par/runtime.GOMAXPROCS(0)))
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if err := path.run(ctx, db); err != nil {
								b.Error(err)
								return
							}
						}
					})
				})
			}
		}
	}
}

// BenchmarkFakeParallel runs the same operations from GOMAXPROCS
// goroutines at once (one per core: more only adds scheduling noise) on a
// pool of 10, to expose contention on shared state.
func BenchmarkFakeParallel(b *testing.B) {
	for _, op := range fakeOps {
		for _, impl := range fakeImpls {
			b.Run("op="+op.name+"/impl="+impl.name, func(b *testing.B) {
				impl.use(b)
				db := openPool(b, impl, &testdriver.Connector{}, 10, 10)
				warm(b, db, 10)
				ctx := context.Background()
				b.ReportAllocs()
				b.SetParallelism(1)
				defer cpuTime(b)()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := op.run(ctx, db); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// BenchmarkScale checks that the cost of a checkout does not depend on the
// pool's size: all connections but one are held (checked out, so pgxleak
// tracks 1,000 of them), and the benchmark loops on the last one.
//
// impl=stack32-reporting runs the same while another goroutine builds
// reports (pgxleak.Checkouts) over all the held connections, back to back:
// the checkout path takes no lock a report holds for more than one
// connection's copy, so what it costs is the CPU and the garbage the
// reporter makes on this two-core machine, not waiting.
func BenchmarkScale(b *testing.B) {
	implReporting := implStack32
	implReporting.name = "stack32-reporting"
	for _, size := range []int{10, 1000} {
		for _, impl := range []benchImpl{implPlain, implStack32, implReporting} {
			b.Run("pool="+strconv.Itoa(size)+"/impl="+impl.name, func(b *testing.B) {
				impl.use(b)
				db := openPool(b, impl, &testdriver.Connector{}, size, size)
				held := hold(b, db, size-1)
				defer release(held)
				if impl.name == implReporting.name {
					stop := make(chan struct{})
					done := make(chan struct{})
					go func() {
						defer close(done)
						for {
							select {
							case <-stop:
								return
							default:
								_ = checkouts(b, db)
							}
						}
					}()
					defer func() { close(stop); <-done }()
				}
				ctx := context.Background()
				b.ReportAllocs()
				defer cpuTime(b)()
				for b.Loop() {
					if _, err := db.ExecContext(ctx, "UPDATE t SET n = n + 1"); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkReport measures building a report of every connection held
// (what a leak report, Find or VerifyNone does): the tracker copies each
// connection's record under that connection's lock, then resolves the
// stacks with no lock held, on the caller's goroutine. Checkouts and
// returns never wait for it.
func BenchmarkReport(b *testing.B) {
	for _, held := range []int{10, 1000} {
		b.Run("held="+strconv.Itoa(held)+"/what=checkouts", func(b *testing.B) {
			db := openPool(b, implStack32, &testdriver.Connector{}, held, held)
			conns := hold(b, db, held)
			defer release(conns)
			b.ReportAllocs()
			for b.Loop() {
				if n := len(checkouts(b, db)); n != held {
					b.Fatalf("%d checkouts, want %d", n, held)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(held), "ns/conn")
		})
		b.Run("held="+strconv.Itoa(held)+"/what=stats", func(b *testing.B) {
			db := openPool(b, implStack32, &testdriver.Connector{}, held, held)
			conns := hold(b, db, held)
			defer release(conns)
			b.ReportAllocs()
			for b.Loop() {
				if s := stats(b, db); s.CheckedOut != held {
					b.Fatalf("%d in use, want %d", s.CheckedOut, held)
				}
			}
		})
	}
}

// hold checks out n connections, each from a call site of its own depth,
// and keeps them.
func hold(tb testing.TB, db *sql.DB, n int) []*sql.Conn {
	tb.Helper()
	conns := make([]*sql.Conn, n)
	for i := range conns {
		c, err := holdAt(db, i%8)
		require.NoError(tb, err)
		conns[i] = c
	}
	return conns
}

//go:noinline
func holdAt(db *sql.DB, depth int) (*sql.Conn, error) {
	if depth > 0 {
		return holdAt(db, depth-1)
	}
	return db.Conn(context.Background())
}

func release(conns []*sql.Conn) {
	for _, c := range conns {
		_ = c.Close()
	}
}

// BenchmarkInspect10k measures the stuck-pool diagnosis with 10,000
// goroutines parked on a channel and one connection held: the goroutine
// dump (stop-the-world), its parsing and the join with the checkouts.
// The dump's rate limit is what keeps this off every request; here each
// iteration waits it out by using a fresh pool.
func BenchmarkInspect10k(b *testing.B) {
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 10000 {
		wg.Go(func() { <-release })
	}
	defer wg.Wait()
	defer close(release)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		db, err := pgxleak.OpenDB(&testdriver.Connector{}, pgxleak.WithLogger(quiet), pgxleak.WithoutServerView())
		require.NoError(b, err)
		c, err := db.Conn(ctx)
		require.NoError(b, err)
		b.StartTimer()
		in, err := pgxleak.Inspect(ctx, db)
		b.StopTimer()
		require.NoError(b, err, "Inspect")
		require.Len(b, in.Checkouts, 1, "notes %q", in.Notes)
		require.NotNil(b, in.Checkouts[0].Holder, "notes %q", in.Notes)
		_ = c.Close()
		_ = db.Close()
		b.StartTimer()
	}
}
