package pgxleak

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// config is what the options set: the struct, every default with its
// reason, and the validation Open runs. The With… options are in
// options.go.
//
// The defaults, each with its reason. database/sql's own defaults
// (unlimited open connections, 2 idle, kept forever) let a traffic spike
// open hundreds of connections, then close all but two of them, then open
// them again on the next spike.
const (
	// defaultConnMaxLifetime is 30 minutes: long enough that reconnecting
	// costs nothing measurable, short enough that connections pick up
	// failovers and DNS changes, and server-side memory growth is bounded.
	defaultConnMaxLifetime = 30 * time.Minute

	// defaultConnMaxIdleTime is 5 minutes: after a spike, surplus
	// connections are given back to the server within minutes, not kept
	// forever.
	defaultConnMaxIdleTime = 5 * time.Minute

	// defaultLeakThreshold is how long a connection may stay checked out
	// before it is reported as a suspected leak: 30 seconds, longer than the
	// request timeouts of most services, so a report means a connection
	// outlived the request that took it. Batch jobs that legitimately hold a
	// connection for minutes should raise it; a false positive explains
	// itself with a "returned after" follow-up.
	defaultLeakThreshold = 30 * time.Second

	// defaultStackDepth is the number of program counters recorded per
	// checkout: the user's frame is typically 8 to 12 deep below
	// database/sql, sqlx or GORM, and 32 leaves room for handlers and
	// middleware above it.
	defaultStackDepth = 32

	// defaultSlowWaitThreshold is the wait time per sampling interval above
	// which a wait episode is reported: 100ms of waiting per second (the
	// default interval) means callers spent a tenth of their time queueing
	// for a connection, or that one caller waited a tenth of a second.
	defaultSlowWaitThreshold = 100 * time.Millisecond

	// defaultWaitSampleInterval is how often the pool's wait statistics are
	// sampled: often enough that an exhausted pool is reported within about
	// a second, rarely enough that db.Stats() (one lock of database/sql's
	// pool mutex) costs nothing measurable.
	defaultWaitSampleInterval = time.Second
)

// Defaults that are not options of their own.
const (
	// defaultReportInterval: the same culprit is reported at most once a
	// minute per kind, so a leak in a hot path gives a count, not a flood.
	defaultReportInterval = time.Minute

	// defaultConnectTimeout bounds the warm-up and every connect made
	// without a deadline: database/sql's background opener connects with a
	// context that only Close ends, and one attempt the network swallows
	// would otherwise hold that goroutine, and a pool slot, until the
	// kernel gives up.
	defaultConnectTimeout = 30 * time.Second

	// dumpInterval: at most one goroutine dump per pool per second. A dump
	// stops the world for about a millisecond per few thousand goroutines
	// (see BENCHMARKS.md); a storm of reports or a live page polled every
	// few seconds shares one. The server view is cached as long.
	dumpInterval = time.Second

	// serverTimeout bounds the side connection's connect and each of its
	// queries, so that a report never waits long for the server's view.
	serverTimeout = time.Second

	// serverRetry: after the server refused the side connection (for
	// example at max_connections), it is not asked again for this long;
	// the reason is given instead.
	serverRetry = 5 * time.Second

	// serverViewStale: a report carries the cached server view up to this
	// old while a fresh one is read in the background; an older one would
	// mislead (a backend's state changes by the second).
	serverViewStale = 5 * time.Second

	// serverWait bounds how long a checkout past the leak threshold waits for
	// the server's view before it is reported without it: half the side
	// connection's timeout, so that a server that does not answer delays a
	// report by that much, never by the timeout (a view takes milliseconds).
	serverWait = serverTimeout / 2

	// sideIdle: the side connection is closed after this long unused, so
	// that a healthy pool keeps no extra connection to the server.
	sideIdle = 30 * time.Second

	// sideApplicationName names the side connection in pg_stat_activity.
	sideApplicationName = "pgxleak side connection"

	// defaultKeepIdleEvery is the period of the min-idle keeper, unless
	// half the idle time in force is shorter (see keepIdleEvery).
	defaultKeepIdleEvery = 30 * time.Second
)

// defaultMaxOpenConns is max(4, 2×GOMAXPROCS at start). A pool should be a
// small multiple of the server's cores ("connections = cores × 2 +
// spindles"); the client's cores are the best guess available without
// asking the server, and a small pool saturated with waiting goroutines
// outperforms a large one contending on the server.
func defaultMaxOpenConns() int { return max(4, 2*runtime.GOMAXPROCS(0)) }

// The defaults that follow from other settings (see resolve):
//   - MaxIdleConns is MaxOpenConns, so that load never churns connections:
//     a connection returned under load is kept, not closed; with no limit
//     on open connections, the default limit or MinIdleConns, whichever is
//     more. No option sets it: db.SetMaxIdleConns after Open does, as on
//     any *sql.DB.
//   - The lifetime's jitter is a tenth of ConnMaxLifetime, so that
//     connections opened together (at start-up, after a failover) do not all
//     reconnect at the same moment. No option sets it (tests do, through
//     lifetimeJitter).
//   - MinIdleConns defaults to 0, so that Open, like sql.Open, does not
//     connect; set it to warm the pool up before the first request.
//   - MaxUses defaults to 0, unlimited.

// config is the resolved configuration of one pool.
type config struct {
	// Tuning.
	maxOpen        int
	maxIdle        int // no option: db.SetMaxIdleConns after Open; tests set it
	maxIdleSet     bool
	minIdle        int
	maxLifetime    time.Duration
	lifetimeJitter time.Duration // no option: a tenth of maxLifetime; tests set it
	jitterSet      bool
	maxIdleTime    time.Duration // no option: db.SetConnMaxIdleTime after Open; tests set it
	maxUses        int64
	poolName       string
	checkInstances int
	warmUpTimeout  time.Duration
	pgBouncer      bool
	sideIdle       time.Duration // no option: sideIdle; tests shorten it
	serverWait     time.Duration // no option: serverWait; tests lengthen it

	// Leak detection.
	leakThreshold  time.Duration
	onLeak         func(Leak)
	logger         *slog.Logger
	loggerSet      bool
	stackDepth     int
	sampleEvery    int64
	libraryPrefix  []string
	onPurpose      []string // WithIgnoredFunction given to Open: functions whose checkouts are held on purpose
	reportInterval time.Duration
	statements     bool
	gcDetection    bool
	serverView     bool          // read pg_stat_activity for reports and Inspect
	idleInTx       time.Duration // idle_in_transaction_session_timeout for Open's sessions; 0: the server's

	// Telemetry.
	tracerProvider    trace.TracerProvider // nil: otel.GetTracerProvider()
	meterProvider     metric.MeterProvider // nil: otel.GetMeterProvider()
	slowWaitThreshold time.Duration
	waitInterval      time.Duration

	errs []error // invalid option values, reported by newConfig
}

func defaultConfig() *config {
	return &config{
		maxOpen:           defaultMaxOpenConns(),
		maxLifetime:       defaultConnMaxLifetime,
		maxIdleTime:       defaultConnMaxIdleTime,
		warmUpTimeout:     defaultConnectTimeout,
		leakThreshold:     defaultLeakThreshold,
		stackDepth:        defaultStackDepth,
		sampleEvery:       1,
		reportInterval:    defaultReportInterval,
		statements:        true,
		gcDetection:       true,
		serverView:        true,
		slowWaitThreshold: defaultSlowWaitThreshold,
		waitInterval:      defaultWaitSampleInterval,
		sideIdle:          sideIdle,
		serverWait:        serverWait,
	}
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

// resolve fills the defaults that depend on other settings and checks the
// combination.
func (c *config) resolve() {
	if !c.maxIdleSet {
		c.maxIdle = c.maxOpen
		if c.maxOpen == 0 { // unlimited: keep what the default limit would, and the min idle
			c.maxIdle = max(defaultMaxOpenConns(), c.minIdle)
		}
	}
	if !c.jitterSet {
		c.lifetimeJitter = c.maxLifetime / 10
	}
	if c.minIdle > c.maxIdle {
		c.invalid("WithMinIdleConns", c.minIdle, "more than the "+numbered(c.maxIdle, "idle connection", "idle connections")+" the pool may keep (WithMaxOpenConns)")
	}
	// Only tests set these two; their checks keep the tests honest.
	if c.maxOpen > 0 && c.maxIdle > c.maxOpen {
		c.invalid("maxIdle", c.maxIdle, fmt.Sprintf("more idle connections than WithMaxOpenConns(%d) allows", c.maxOpen))
	}
	if c.lifetimeJitter > 0 && (c.maxLifetime == 0 || c.lifetimeJitter > c.maxLifetime) {
		c.invalid("lifetimeJitter", c.lifetimeJitter, fmt.Sprintf("needs a finite lifetime at least as long (WithConnMaxLifetime(%v))", c.maxLifetime))
	}
}

// jittered reports whether connections get a jittered end of life.
func (c *config) jittered() bool { return c.maxLifetime > 0 && c.lifetimeJitter > 0 }
