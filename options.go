package pgxleak

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// An Option configures a pool opened with [Open] or [OpenDB]: its tuning
// (tuning.go), its leak detection (leakcheck.go) or its telemetry
// (tracing.go). Options are applied in order; invalid values make Open
// return an error that names the option.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// config is the resolved configuration of one pool.
type config struct {
	// Tuning; see tuning.go for the defaults and why.
	maxOpen        int
	maxIdle        int
	maxIdleSet     bool
	minIdle        int
	maxLifetime    time.Duration
	lifetimeJitter time.Duration
	jitterSet      bool
	maxIdleTime    time.Duration
	maxUses        int64
	poolName       string
	checkInstances int
	warmUpTimeout  time.Duration
	keepIdleEvery  time.Duration

	// Leak detection; see leakcheck.go.
	leakThreshold  time.Duration
	onLeak         func(Leak)
	logger         *slog.Logger
	loggerSet      bool
	stackDepth     int
	sampleEvery    int64
	libraryPrefix  []string
	reportInterval time.Duration
	statements     bool
	gcDetection    bool

	// Telemetry; see tracing.go.
	tracerProvider    trace.TracerProvider
	meterProvider     metric.MeterProvider
	slowWaitThreshold time.Duration
	slowWaitSet       bool
	waitInterval      time.Duration

	errs []error // invalid option values, reported by newConfig
}

// invalid records that an option got a value it cannot take.
func (c *config) invalid(option string, value any, why string) {
	c.errs = append(c.errs, fmt.Errorf("pgxleak: %s(%v): %s", option, value, why))
}

func newConfig(opts []Option) (*config, error) {
	c := defaultConfig()
	for _, o := range opts {
		if o == nil {
			c.errs = append(c.errs, errors.New("pgxleak: nil Option"))
			continue
		}
		o.apply(c)
	}
	c.resolve()
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	return c, nil
}
