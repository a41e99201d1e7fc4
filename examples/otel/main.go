// Command otel shows pgxleak's OpenTelemetry signals, printed by the OTel
// stdout exporters: a request leaks a connection, and the leak's span,
// linked to the request's span, names the line of this file that took the
// connection; then the pool's metrics.
//
//	go run ./examples/otel    # DATABASE_URL, or the local server
//
// It exits 0 when the leak was reported with this file's line.
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgxleak/pgxleak"
)

func main() {
	if err := run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	dsn := os.Getenv("DATABASE_URL")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}

	// Spans are printed as they end; metrics once, when collected below.
	spanOut, err := stdouttrace.New(stdouttrace.WithPrettyPrint())
	if err != nil {
		return err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spanOut))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	metricOut, err := stdoutmetric.New(stdoutmetric.WithPrettyPrint())
	if err != nil {
		return err
	}
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()

	leaks := make(chan pgxleak.Leak, 4)
	db, err := pgxleak.Open("pgx", dsn,
		pgxleak.WithPoolName("example-otel"),
		pgxleak.WithMaxOpenConns(2),
		pgxleak.WithLeakThreshold(100*time.Millisecond), // short, for the demo
		pgxleak.WithTracerProvider(tp),
		pgxleak.WithMeterProvider(mp),
		pgxleak.WithOnLeak(func(l pgxleak.Leak) { leaks <- l }),
	)
	if err != nil {
		return err
	}
	defer db.Close()

	// A few healthy requests, for the metrics, then one that leaks.
	for range 5 {
		if _, err := db.ExecContext(ctx, "SELECT 1"); err != nil {
			return err
		}
	}
	tracer := tp.Tracer("example")
	reqCtx, req := tracer.Start(ctx, "GET /users/42")
	if err := getUser(reqCtx, db); err != nil {
		return err
	}
	req.End()

	var l pgxleak.Leak
	select {
	case l = <-leaks:
	case <-time.After(5 * time.Second):
		return errors.New("no leak was reported")
	}
	var metrics metricdata.ResourceMetrics // the pool's state while it leaks
	if err := reader.Collect(ctx, &metrics); err != nil {
		return err
	}

	// Drain waits briefly for the connection, which never comes back: the
	// suspected leak's span ends (its end time is the detection, its status
	// Error) and a still_out span follows. Both link to the request's span.
	drainCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	var lerr *pgxleak.LeakError
	if err := pgxleak.Drain(drainCtx, db); !errors.As(err, &lerr) {
		return fmt.Errorf("drain: %v, want the leaked connection reported", err)
	}
	if err := metricOut.Export(ctx, &metrics); err != nil {
		return err
	}

	fmt.Printf("\nThe pgxleak.connection.leak spans above link to the request's trace %s:\n%s\n",
		req.SpanContext().TraceID(), l)
	if !strings.HasSuffix(l.Culprit.File, "examples/otel/main.go") {
		return fmt.Errorf("culprit %s, want this file", l.Culprit)
	}
	return nil
}

// getUser forgets to close its connection: the leak.
func getUser(ctx context.Context, db *sql.DB) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	var name string
	err = conn.QueryRowContext(ctx, "SELECT 'ada'").Scan(&name)
	trace.SpanFromContext(ctx).AddEvent("user loaded")
	return err // no conn.Close()
}
