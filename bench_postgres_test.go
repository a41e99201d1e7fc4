package pgxleak_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// Real PostgreSQL on loopback: pgx's stdlib against pgxleak over the same
// pgx connector, both pools of 10 kept idle.

var pgQueries = []benchOp{
	{"select1", func(ctx context.Context, db *sql.DB) error {
		var n int
		return db.QueryRowContext(ctx, "SELECT 1").Scan(&n)
	}},
	{"rows100", func(ctx context.Context, db *sql.DB) error {
		rows, err := db.QueryContext(ctx, "SELECT g, 'row ' || g FROM generate_series(1, 100) g")
		if err != nil {
			return err
		}
		defer rows.Close()
		var (
			n int
			s string
		)
		count := 0
		for rows.Next() {
			if err := rows.Scan(&n, &s); err != nil {
				return err
			}
			count++
		}
		if count != 100 {
			return fmt.Errorf("%d rows", count)
		}
		return rows.Err()
	}},
}

var pgImpls = []benchImpl{implPlain, implStack32}

func pgConnector(tb testing.TB) driver.Connector {
	tb.Helper()
	cfg, err := pgx.ParseConfig(pgtest.AdminDSN(tb))
	require.NoError(tb, err)
	return stdlib.GetConnector(*cfg)
}

// BenchmarkPG runs the queries sequentially (mode=seq) and from 50
// goroutines on a pool of 10 (mode=par50), and reports the median and 99th
// percentile latency of an operation next to the throughput.
func BenchmarkPG(b *testing.B) {
	for _, q := range pgQueries {
		for _, mode := range []string{"seq", "par50"} {
			for _, impl := range pgImpls {
				b.Run("query="+q.name+"/mode="+mode+"/impl="+impl.name, func(b *testing.B) {
					impl.use(b)
					db := openPool(b, impl, pgConnector(b), 10, 10)
					warm(b, db, 10)
					ctx := context.Background()
					var lat latencies
					b.ReportAllocs()
					b.ResetTimer()
					stopCPU := cpuTime(b)
					if mode == "seq" {
						l := make([]time.Duration, 0, 1024)
						for b.Loop() {
							t0 := time.Now()
							if err := q.run(ctx, db); err != nil {
								b.Fatal(err)
							}
							l = append(l, time.Since(t0))
						}
						lat.add(l)
					} else {
						b.SetParallelism(max(1, 50/runtime.GOMAXPROCS(0)))
						b.RunParallel(func(pb *testing.PB) {
							l := make([]time.Duration, 0, 1024)
							for pb.Next() {
								t0 := time.Now()
								if err := q.run(ctx, db); err != nil {
									b.Error(err)
									return
								}
								l = append(l, time.Since(t0))
							}
							lat.add(l)
						})
					}
					b.StopTimer()
					stopCPU()
					lat.report(b)
				})
			}
		}
	}
}

// BenchmarkPGPaired measures the same as BenchmarkPG, but interleaved: a
// plain pool and a pgxleak pool of 10 each, side by side, taking turns.
// Both see the same server, the same load from other processes and the
// same moment, which the separate sub-benchmarks of BenchmarkPG cannot
// promise on a shared machine. It reports ratios, pgxleak over plain:
//
//   - mode=seq: each iteration runs the query once on each pool, back to
//     back, in alternating order. pair-ratio is the median over all pairs
//     of the ratio of the two queries' times; time-ratio the ratio of the
//     mean times (the inverse of the throughput ratio); p50-ratio the ratio
//     of the medians.
//   - mode=par50: each iteration runs a round of 500 queries from 50
//     goroutines on each pool in turn. time-ratio is the median over rounds
//     of the ratio of the rounds' elapsed times (the inverse of the
//     throughput ratio), p50-ratio the median of the ratios of the rounds'
//     median latencies. Per-query pairs would mean nothing here: the
//     latency is mostly queueing for one of 10 connections, which depends
//     on how many goroutines happen to be queued on that pool.
//
// pair=plain-plain is the control: the same with two plain pools, whose
// ratios show how far this machine's noise alone moves them from 1.
func BenchmarkPGPaired(b *testing.B) {
	for _, q := range pgQueries {
		for _, mode := range []string{"seq", "par50"} {
			for _, impls := range [][2]benchImpl{{implPlain, implStack32}, {implPlain, implPlain}} {
				b.Run("query="+q.name+"/mode="+mode+"/pair="+impls[0].name+"-"+impls[1].name, func(b *testing.B) {
					pairedBench(b, q, mode, impls)
				})
			}
		}
	}
}

func pairedBench(b *testing.B, q benchOp, mode string, impls [2]benchImpl) {
	implStack32.use(b)
	dbs := [2]*sql.DB{
		openPool(b, impls[0], pgConnector(b), 10, 10),
		openPool(b, impls[1], pgConnector(b), 10, 10),
	}
	warm(b, dbs[0], 10)
	warm(b, dbs[1], 10)
	b.ReportAllocs()
	b.ResetTimer()
	if mode != "seq" {
		pairedRounds(b, q, dbs, 50, 500)
		return
	}
	pairedSeq(b, q, dbs, func(seg int) [2]*sql.DB {
		// Which pool connects first alternates too: the order the
		// server processes start in biases their latency, even between
		// two plain pools.
		var fresh [2]*sql.DB
		for k := range 2 {
			which := (seg + k) % 2
			fresh[which] = openPool(b, impls[which], pgConnector(b), 10, 10)
			warm(b, fresh[which], 1)
		}
		return fresh
	})
}

// pairedSeq runs the pairs on one goroutine. Every 500 pairs it swaps both
// pools for fresh ones, connected in alternating order: on one goroutine
// each pool uses one connection, so one server process, and which process
// starts first and where the scheduler puts it biases the comparison for
// as long as they live (by up to 15% between two plain pools, here).
func pairedSeq(b *testing.B, q benchOp, dbs [2]*sql.DB, fresh func(seg int) [2]*sql.DB) {
	ctx := context.Background()
	var l [2][]time.Duration
	for i := 0; b.Loop(); i++ {
		if i > 0 && i%500 == 0 {
			b.StopTimer()
			_ = dbs[0].Close()
			_ = dbs[1].Close()
			dbs = fresh(i / 500)
			b.StartTimer()
		}
		for k := range 2 {
			which := (i + k) % 2
			t0 := time.Now()
			if err := q.run(ctx, dbs[which]); err != nil {
				b.Fatal(err)
			}
			l[which] = append(l[which], time.Since(t0))
		}
	}
	b.StopTimer()
	var lat [2]latencies
	var pairs ratios
	lat[0].add(l[0])
	lat[1].add(l[1])
	mean := [2]time.Duration{}
	for w := range 2 {
		for _, d := range l[w] {
			mean[w] += d
		}
	}
	for j := range min(len(l[0]), len(l[1])) {
		pairs.add(float64(l[1][j]) / float64(l[0][j]))
	}
	if mean[0] > 0 {
		b.ReportMetric(pairs.median(), "pair-ratio")
		b.ReportMetric(float64(mean[1])/float64(mean[0]), "time-ratio")
		b.ReportMetric(lat[1].quantile(0.5)/lat[0].quantile(0.5), "p50-ratio")
	}
}

// pairedRounds runs, per iteration, a round of n queries from g goroutines
// on each pool, in alternating order.
func pairedRounds(b *testing.B, q benchOp, dbs [2]*sql.DB, g, n int) {
	ctx := context.Background()
	var times, p50s ratios
	for i := 0; b.Loop(); i++ {
		var elapsed [2]time.Duration
		var p50 [2]float64
		for k := range 2 {
			which := (i + k) % 2
			var lat latencies
			var left atomic.Int64
			left.Store(int64(n))
			var wg sync.WaitGroup
			t0 := time.Now()
			for range g {
				wg.Go(func() {
					var l []time.Duration
					for left.Add(-1) >= 0 {
						t := time.Now()
						if err := q.run(ctx, dbs[which]); err != nil {
							b.Error(err)
							return
						}
						l = append(l, time.Since(t))
					}
					lat.add(l)
				})
			}
			wg.Wait()
			elapsed[which] = time.Since(t0)
			p50[which] = lat.quantile(0.5)
		}
		times.add(float64(elapsed[1]) / float64(elapsed[0]))
		p50s.add(p50[1] / p50[0])
	}
	b.StopTimer()
	b.ReportMetric(times.median(), "time-ratio")
	b.ReportMetric(p50s.median(), "p50-ratio")
}

// BenchmarkPGPool compares a pool with a new connection per query
// (MaxIdleConns 0: every checkout connects and every return disconnects),
// for SELECT 1 on one goroutine: the cost a pool saves.
func BenchmarkPGPool(b *testing.B) {
	for _, pooled := range []bool{true, false} {
		for _, impl := range pgImpls {
			name := "pooled"
			idle := 10
			if !pooled {
				name, idle = "unpooled", 0
			}
			b.Run("pool="+name+"/impl="+impl.name, func(b *testing.B) {
				impl.use(b)
				db := openPool(b, impl, pgConnector(b), 10, idle)
				if pooled {
					warm(b, db, 1)
				}
				ctx := context.Background()
				var lat latencies
				l := make([]time.Duration, 0, 1024)
				b.ReportAllocs()
				stopCPU := cpuTime(b)
				for b.Loop() {
					t0 := time.Now()
					if err := pgQueries[0].run(ctx, db); err != nil {
						b.Fatal(err)
					}
					l = append(l, time.Since(t0))
				}
				stopCPU()
				lat.add(l)
				lat.report(b)
			})
		}
	}
}

// latencies collects per-operation durations from any number of goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d []time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d...)
	l.mu.Unlock()
}

// ratios collects ratios, pgxleak's over plain's, from any goroutine.
type ratios struct {
	mu sync.Mutex
	r  []float64
}

func (p *ratios) add(r float64) {
	p.mu.Lock()
	p.r = append(p.r, r)
	p.mu.Unlock()
}

func (p *ratios) median() float64 {
	if len(p.r) == 0 {
		return 0
	}
	slices.Sort(p.r)
	return p.r[len(p.r)/2]
}

// quantile returns the p-quantile in nanoseconds, 0 if there is no data.
func (l *latencies) quantile(p float64) float64 {
	if len(l.d) == 0 {
		return 0
	}
	if !slices.IsSorted(l.d) {
		slices.Sort(l.d)
	}
	return float64(l.d[int(p*float64(len(l.d)-1))].Nanoseconds())
}

func (l *latencies) report(b *testing.B) {
	if len(l.d) == 0 {
		return
	}
	b.ReportMetric(l.quantile(0.50), "p50-ns")
	b.ReportMetric(l.quantile(0.99), "p99-ns")
}

// cpuTime reports, when the returned function is called, the CPU time the
// process spent per operation since cpuTime was called (user and system,
// all threads: the garbage collector's work included), as cpu-ns/op. On a
// shared machine it varies less than the elapsed time, which includes the
// time other processes had the CPU.
func cpuTime(b *testing.B) func() {
	start := processCPU()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
