package pgxleak_test

// The example takes the global meter provider rather than calling
// sdkmetric.NewMeterProvider: inlined, that call makes this test package
// compile about 1,400 of the SDK's generic functions again at every edit of
// a root file (see internal/oteltest). examples/otel calls it.

import (
	"context"
	"log"
	"os"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/pgxleak/pgxleak"
)

// Leak spans, wait-episode spans and the db.client.connection.* metrics go
// to the providers given here, or to the global ones by default. A request
// whose context carries a span gets linked from any leak of a connection
// it checked out. (It needs a server; go run ./examples/otel runs the same
// with the stdout exporters and the SDK's meter provider.)
func ExampleWithTracerProvider() {
	tp := sdktrace.NewTracerProvider() // add your exporter: sdktrace.WithBatcher(exp)
	defer tp.Shutdown(context.Background())
	mp := otel.GetMeterProvider() // or yours: sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))

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
