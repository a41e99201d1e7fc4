// Command fleetsvc is one instance of a service that uses pgxleak and
// exposes its metrics to Prometheus through OpenTelemetry's Prometheus
// exporter, as a Go service would: the fleet test (fleet_test.go) starts
// about twenty of them against one PostgreSQL, one leaking, one too small
// for its load, the rest healthy, and asks Prometheus which is which.
//
//	OTEL_SERVICE_NAME=orders OTEL_RESOURCE_ATTRIBUTES=service.instance.id=orders-1 \
//	  go run ./examples/fleetsvc -addr 127.0.0.1:9464
//
// It serves /metrics (Prometheus text, or OpenMetrics with exemplars) and
// the live page at /debug/pgxleak/, and makes its own load: -workers
// goroutines that each run a query holding a connection for -hold, giving
// up after -timeout, -pause apart. With -leak, one request in -leak-every
// leaves its transaction open (see leak), up to -leak-max of them. It
// prints "listening on http://ADDR" once it serves, and stops on SIGINT or
// SIGTERM.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/livepage"
)

type config struct {
	addr, dsn, pool string
	maxOpen         int
	workers         int
	hold, timeout   time.Duration
	pause           time.Duration
	leakThreshold   time.Duration
	leak            bool
	leakEvery       int
	leakMax         int
	deadlock        bool
}

func main() {
	var c config
	flag.StringVar(&c.addr, "addr", "127.0.0.1:0", "listen address")
	flag.StringVar(&c.dsn, "dsn", os.Getenv("DATABASE_URL"), "PostgreSQL DSN (default DATABASE_URL, else the local server)")
	flag.StringVar(&c.pool, "pool", "main", "pool name (WithPoolName)")
	flag.IntVar(&c.maxOpen, "max-open", 2, "the pool's maximum of connections")
	flag.IntVar(&c.workers, "workers", 1, "goroutines making requests")
	flag.DurationVar(&c.hold, "hold", 5*time.Millisecond, "how long a request holds its connection (pg_sleep)")
	flag.DurationVar(&c.timeout, "timeout", time.Second, "a request's deadline")
	flag.DurationVar(&c.pause, "pause", 100*time.Millisecond, "pause between a worker's requests")
	flag.DurationVar(&c.leakThreshold, "leak-threshold", 2*time.Second, "pgxleak's leak threshold")
	flag.BoolVar(&c.leak, "leak", false, "leak a transaction now and then")
	flag.IntVar(&c.leakEvery, "leak-every", 10, "with -leak, one request in this many leaks")
	flag.IntVar(&c.leakMax, "leak-max", 2, "with -leak, at most this many leaks")
	flag.BoolVar(&c.deadlock, "deadlock", false, "query the pool again while holding one of its connections (with -max-open 1, a deadlock until -timeout)")
	flag.Parse()
	if c.dsn == "" {
		c.dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, c config) error {
	// Metrics: OpenTelemetry's SDK, read by its Prometheus exporter into a
	// registry of our own, served at /metrics. The resource comes from
	// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, which pgxleak reads
	// too: the series, the sessions' application_name and target_info
	// name the same service and instance.
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK())
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter), sdkmetric.WithResource(res))
	defer func() { _ = mp.Shutdown(context.Background()) }()

	db, err := pgxleak.Open("pgx", c.dsn,
		pgxleak.WithPoolName(c.pool),
		pgxleak.WithMeterProvider(mp),
		pgxleak.WithMaxOpenConns(c.maxOpen),
		pgxleak.WithLeakThreshold(c.leakThreshold),
		pgxleak.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, nil))),
	)
	if err != nil {
		return err
	}
	defer db.Close()

	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	mux.Handle("/debug/pgxleak/", livepage.Handler(db))
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Printf("listening on http://%s\n", ln.Addr())

	var wg sync.WaitGroup
	s := &service{db: db, c: c}
	for i := range c.workers {
		wg.Go(func() { s.work(ctx, i) })
	}
	select {
	case <-ctx.Done():
	case err = <-served:
	}
	wg.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	s.rollback()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

type service struct {
	db *sql.DB
	c  config

	mu     sync.Mutex
	n      int
	leaked []*sql.Tx
}

// work makes requests until ctx ends.
func (s *service) work(ctx context.Context, worker int) {
	t := time.NewTicker(max(s.c.pause, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, s.c.timeout)
		s.mu.Lock()
		s.n++
		leak := s.c.leak && worker == 0 && s.n%s.c.leakEvery == 0 && len(s.leaked) < s.c.leakMax
		s.mu.Unlock()
		if leak {
			// On a goroutine of its own that then exits, as a request
			// handler's would: nothing is left to return the connection.
			done := make(chan struct{})
			go func() { defer close(done); s.leak(ctx) }()
			<-done
		} else if s.c.deadlock {
			s.deadlock(rctx)
		} else {
			_, _ = s.db.ExecContext(rctx, "SELECT pg_sleep($1)", s.c.hold.Seconds())
		}
		cancel()
	}
}

// leak begins a transaction and forgets it: the bug the fleet test finds
// by its line.
func (s *service) leak(ctx context.Context) {
	tx, err := s.db.BeginTx(ctx, nil) // LEAK: the line the alert names
	if err != nil {
		return
	}
	if _, err := tx.ExecContext(ctx, "SELECT 1"); err != nil {
		_ = tx.Rollback()
		return
	}
	s.mu.Lock()
	s.leaked = append(s.leaked, tx) // kept only to be rolled back at exit
	s.mu.Unlock()
}

// deadlock asks for a second connection while its Rows holds one.
func (s *service) deadlock(ctx context.Context) {
	rows, err := s.db.QueryContext(ctx, "SELECT 1") // HELD: the connection the deadlocked goroutine holds
	if err != nil {
		return
	}
	defer rows.Close()
	_, _ = s.db.ExecContext(ctx, "SELECT 2") // DEADLOCK: waits for a connection while holding one
}

func (s *service) rollback() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, tx := range s.leaked {
		_ = tx.Rollback()
	}
}
