// Command poolsize runs the same 100 queries, all at once, on pools of at
// most 2, 5, 10 and 20 connections, and prints what happened in each: how
// long the batch took, how many connections were in use at the peak, how
// many were created, and how often and how long goroutines waited for a
// connection (database/sql's WaitCount and WaitDuration). Each pool size
// runs twice: pooled (connections opened beforehand and kept), and with a
// new connection per query (each connection is closed after one use),
// which is what a pool saves.
//
//	go run ./examples/poolsize
//
// It connects to DATABASE_URL, or to the local server at 127.0.0.1:5432
// (user postgres, database test), and uses at most 20 connections at once.
package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/pgxleak/pgxleak"
)

const (
	queries = 100
	// query takes about 5ms on the server, like a small indexed read plus
	// a little work, so that the pool, not the client, is the bottleneck.
	query = "SELECT pg_sleep(0.005)"
)

func main() {
	dsn := os.Getenv("DATABASE_URL")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		fail(err)
	}

	fmt.Printf("%d queries (%q), all started at once, on pools of different sizes.\n\n", queries, query)
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "max open\tconnections\telapsed\tpeak in use\tcreated\twaits\twait time\tmean wait\tunpooled/pooled\t")
	for _, size := range []int{2, 5, 10, 20} {
		pooled, err := run(cfg, size, true)
		if err != nil {
			fail(err)
		}
		unpooled, err := run(cfg, size, false)
		if err != nil {
			fail(err)
		}
		for _, r := range []result{pooled, unpooled} {
			ratio := ""
			if !r.pooled {
				ratio = fmt.Sprintf("%.1f×", float64(unpooled.elapsed)/float64(pooled.elapsed))
			}
			fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\t\n",
				r.size, r.mode(), ms(r.elapsed), r.peak, r.created, r.stats.WaitCount,
				ms(r.stats.WaitDuration), ms(r.meanWait()), ratio)
		}
	}
	_ = w.Flush()
	fmt.Println(`
pooled:   the pool's connections were opened (and checked) before the batch,
          and every query reuses one.
new conn: every connection is closed after one query (WithMaxUses(1)), so every
          query opens one: a TCP connect, PostgreSQL's startup and
          authentication, and a new server process each time.
waits:    queries that found all connections in use and queued for one
          (database/sql's WaitCount); wait time is their total wait.

Without a pool the peak stays below the limit: database/sql opens connections
for waiting goroutines one at a time, on a single background goroutine, so
connection setup, not the limit, sets the pace.

With 100 queries and n connections, the batch takes about 100/n rounds of one
query; beyond what the server can run in parallel (its cores), more
connections only move the queueing from the pool to the server.`)
}

type result struct {
	size    int
	pooled  bool
	elapsed time.Duration
	peak    int64
	created int64
	stats   sql.DBStats
}

func (r result) mode() string {
	if r.pooled {
		return "pooled"
	}
	return "new conn"
}

func (r result) meanWait() time.Duration {
	if r.stats.WaitCount == 0 {
		return 0
	}
	return r.stats.WaitDuration / time.Duration(r.stats.WaitCount)
}

// run opens a pgxleak pool of at most size connections and runs the batch.
// Pooled, the pool is warmed up to size connections first
// (WithMinIdleConns); otherwise every connection is used once.
func run(cfg *pgx.ConnConfig, size int, pooled bool) (result, error) {
	r := result{size: size, pooled: pooled}
	counter := &countingConnector{Connector: stdlib.GetConnector(*cfg)}
	opts := []pgxleak.Option{
		pgxleak.WithMaxOpenConns(size),
		pgxleak.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
	}
	if pooled {
		opts = append(opts, pgxleak.WithMinIdleConns(size))
	} else {
		// Each connection serves one checkout and is then closed. Idle
		// connections alone (MaxIdleConns 0) would not do it: database/sql
		// hands a returned connection straight to a waiting goroutine.
		opts = append(opts, pgxleak.WithMaxUses(1))
	}
	db, err := pgxleak.OpenDB(counter, opts...)
	if err != nil {
		return r, err
	}
	defer db.Close()
	if !pooled {
		db.SetMaxIdleConns(0)
	}
	before := counter.n.Load()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var (
		inUse atomic.Int64
		peak  atomic.Int64
		wg    sync.WaitGroup
		errs  = make(chan error, queries)
		start = make(chan struct{})
	)
	for range queries {
		wg.Go(func() {
			<-start
			if err := one(ctx, db, &inUse, &peak); err != nil {
				errs <- err
			}
		})
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	r.elapsed = time.Since(t0)
	close(errs)
	if err := <-errs; err != nil {
		return r, err
	}
	r.peak = peak.Load()
	r.created = counter.n.Load() - before
	r.stats = db.Stats()
	return r, pgxleak.Drain(ctx, db)
}

// one checks a connection out, runs the query on it and gives it back,
// keeping count of the connections in use.
func one(ctx context.Context, db *sql.DB, inUse, peak *atomic.Int64) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	n := inUse.Add(1)
	defer inUse.Add(-1)
	for {
		p := peak.Load()
		if n <= p || peak.CompareAndSwap(p, n) {
			break
		}
	}
	_, err = conn.ExecContext(ctx, query)
	return err
}

// countingConnector counts the connections opened.
type countingConnector struct {
	driver.Connector
	n atomic.Int64
}

func (c *countingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err == nil {
		c.n.Add(1)
	}
	return conn, err
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "poolsize:", err)
	os.Exit(1)
}
