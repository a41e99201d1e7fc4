package pgxleak_test

import (
	"context"
	"log"
	"os"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/pgxleak/pgxleak"
)

// Leak spans, wait-episode spans and the db.client.connection.* metrics go
// to the providers given here, or to the global ones by default. A request
// whose context carries a span gets linked from any leak of a connection
// it checked out. (It needs a server; go run ./examples/otel runs the same
// with the stdout exporters.)
func ExampleWithTracerProvider() {
	tp := sdktrace.NewTracerProvider() // add your exporter: sdktrace.WithBatcher(exp)
	mp := sdkmetric.NewMeterProvider() // add your reader: sdkmetric.WithReader(r)
	defer tp.Shutdown(context.Background())
	defer mp.Shutdown(context.Background())

	db, err := pgxleak.Open("pgx", os.Getenv("DATABASE_URL"),
		pgxleak.WithTracerProvider(tp),                     // default: otel.GetTracerProvider()
		pgxleak.WithMeterProvider(mp),                      // default: otel.GetMeterProvider()
		pgxleak.WithSlowWaitThreshold(50*time.Millisecond), // default: 100ms of waiting per interval
	)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	ctx, span := tp.Tracer("app").Start(context.Background(), "GET /users/42")
	defer span.End()
	var name string
	if err := db.QueryRowContext(ctx, "SELECT 'ada'").Scan(&name); err != nil {
		log.Print(err)
	}
}
