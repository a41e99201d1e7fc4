package pgxleak

import (
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// An Option configures a pool opened with [Open] or [OpenDB]: its tuning,
// its leak detection or its telemetry (the With… options). Options are
// applied in order; invalid values make Open return an error that names the
// option.
//
// Zero means the same everywhere: a zero duration, count or limit turns
// the feature off or lifts the limit ("0 means unlimited", "0 keeps them
// forever", "0 turns it off"), and a nil logger, callback or provider
// turns that output off. Where zero could mean nothing (a pool name, a
// sampling rate, an interval) the option says so and rejects it.
// Negative values are rejected everywhere. The checks take Options too, of their own: [WithGracePeriod] and
// [WithIgnoredFunction] for [Find], [VerifyNone] and [VerifyTestMain],
// [WithTerminateStillOut] for [Drain]; Open refuses those, but for
// WithIgnoredFunction, which marks the checkouts held on purpose, and the
// checks ignore the pool's other options.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// Pool tuning. Open applies its limits with database/sql's own setters,
// and database/sql enforces them: a later call of a setter replaces the
// option, exactly as on a plain pool. Open sets safe defaults for all four
// of database/sql's limits, but takes options only for the two it needs
// before it returns (the warm-up and the capacity check need the maximum
// of open connections; the lifetime carries pgxleak's jitter). Set the
// other two as on any *sql.DB, after Open; pgxleak follows the values in
// force:
//
//	db.SetMaxIdleConns(n)     // default: the maximum of open connections
//	db.SetConnMaxIdleTime(d)  // default: 5 minutes

// WithMaxOpenConns limits the number of open connections, in use plus idle
// (see [sql.DB.SetMaxOpenConns]); 0 means unlimited, as in database/sql.
// Default: max(4, 2×GOMAXPROCS at start). Keep instances × n below the
// server's max_connections with headroom; [CheckCapacity] does the
// arithmetic.
func WithMaxOpenConns(n int) Option {
	return optionFunc(func(c *config) {
		if n < 0 {
			c.invalid("WithMaxOpenConns", n, "must not be negative (0 means unlimited)")
			return
		}
		c.maxOpen = n
	})
}

// WithMinIdleConns makes Open warm up n connections, concurrently, before it
// returns, and then keeps at least n connections idle for as long as the pool
// lives: a background task re-opens the ones that database/sql closes
// (idle time, lifetime, errors) and keeps n of them from going idle for
// longer than ConnMaxIdleTime. database/sql has no such setting. n must not
// exceed the maximum of open connections. The keeper follows the limits in
// force, including a db.SetMaxIdleConns, SetMaxOpenConns or
// SetConnMaxIdleTime after Open: it keeps no more than MaxIdleConns idle,
// and refreshes them within half the idle time. Open fails if n > 0 and the
// server is unreachable. 0 turns it off. Default: 0.
func WithMinIdleConns(n int) Option {
	return optionFunc(func(c *config) {
		if n < 0 {
			c.invalid("WithMinIdleConns", n, "must not be negative")
			return
		}
		c.minIdle = n
	})
}

// WithConnMaxLifetime closes connections that have been open longer than d
// (see [sql.DB.SetConnMaxLifetime]); 0 keeps them forever. Open sets it
// with db.SetConnMaxLifetime and database/sql enforces it, so a later
// db.SetConnMaxLifetime replaces it exactly as on a plain pool.
// Default: 30 minutes.
//
// Each connection gets a lifetime drawn uniformly from [d−d/10, d], so
// that connections opened together do not all reconnect together (HikariCP
// subtracts up to 2.5% for the same reason). database/sql closes a
// connection at the full lifetime; pgxleak discards it at its jittered end,
// when it is returned or when it is checked out again if the driver
// implements driver.SessionResetter (pgx does), and counts it in
// [PoolStats].LifetimeDiscarded (database/sql's MaxLifetimeClosed counts
// the rest, those that reached the full lifetime first). The jitter
// applies only while the lifetime in force is the one Open set: after a
// db.SetConnMaxLifetime with another value, including 0, database/sql's
// lifetime is all there is, as on a plain pool, for the rest of the pool's
// life. For a lifetime without jitter, open with WithConnMaxLifetime(0) and
// call db.SetConnMaxLifetime(d).
func WithConnMaxLifetime(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d < 0 {
			c.invalid("WithConnMaxLifetime", d, "must not be negative")
			return
		}
		c.maxLifetime = d
	})
}

// WithMaxUses discards a connection after it has been checked out n times,
// bounding the server-side state (caches, prepared statements, memory) a
// long-lived connection accumulates; 0 means unlimited. Default: 0.
func WithMaxUses(n int64) Option {
	return optionFunc(func(c *config) {
		if n < 0 {
			c.invalid("WithMaxUses", n, "must not be negative")
			return
		}
		c.maxUses = n
	})
}

// WithPoolName names the pool in reports, spans and metrics
// (db.client.connection.pool.name). An empty name is rejected: leave the
// option out for the default. Default: "host:port/database" from
// pgx's DSN or the first pgx connection, never with credentials; a pool over
// another driver has no name unless given one.
func WithPoolName(name string) Option {
	return optionFunc(func(c *config) {
		if name == "" {
			c.invalid("WithPoolName", `""`, "must not be empty")
			return
		}
		c.poolName = name
	})
}

// WithCapacityCheck makes Open run [CheckCapacity] for the given number of
// application instances sharing the server, and log a warning through
// log/slog (the [WithLogger] logger) if the pools would not fit. instances
// must be at least 1: 0 instances is rejected, not taken as "off" (leave
// the option out for no check), since a count of instances that is 0 by
// mistake would otherwise skip the check silently.
func WithCapacityCheck(instances int) Option {
	return optionFunc(func(c *config) {
		if instances < 1 {
			c.invalid("WithCapacityCheck", instances, "must be at least 1")
			return
		}
		c.checkInstances = instances
	})
}

// Leak detection.

// WithLeakThreshold reports a connection held longer than d as a suspected
// leak, once per checkout; 0 disables the check. Default: 30 seconds,
// longer than the request timeouts of most services.
func WithLeakThreshold(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d < 0 {
			c.invalid("WithLeakThreshold", d, "must not be negative")
			return
		}
		c.leakThreshold = d
	})
}

// WithOnLeak calls f with every leak report after de-duplication (the
// suppressed ones are counted, and logged as summary lines), one at a
// time, on a goroutine of its own: f may call db.Close or [Drain]. Close
// waits until f has had every report made before it, except when f itself
// calls Close. If f falls 256 reports behind, further reports skip it
// (they are still logged, traced and counted) until it catches up. A nil f
// turns the callback off. Default: none.
func WithOnLeak(f func(Leak)) Option {
	return optionFunc(func(c *config) { c.onLeak = f })
}

// WithLogger sends leak reports to l: suspected, garbage-collected and
// still-out leaks at WARN, "returned after" follow-ups at INFO. A line
// names the culprit once and the application's own callers; the stack and
// the checkout time are added when l is enabled at DEBUG. A nil l turns
// logging off. Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) { c.logger, c.loggerSet = l, true })
}

// WithStackDepth sets how many frames each checkout records; 0 turns stack
// capture off (checkouts are still tracked and counted, but reports have no
// culprit). Default: 32.
func WithStackDepth(n int) Option {
	return optionFunc(func(c *config) {
		if n < 0 || n > 256 {
			c.invalid("WithStackDepth", n, "must be between 0 and 256")
			return
		}
		c.stackDepth = n
	})
}

// WithStackSampling records the stack on one checkout in every n of each
// connection; the others are tracked and counted without a culprit (their
// reports say so, and are never merged), and [WithIgnoredFunction] cannot match
// them: use 1 in tests. 1 records every checkout. n must be at least 1: to
// record no stack at all, use [WithStackDepth](0). Default: 1.
func WithStackSampling(n int) Option {
	return optionFunc(func(c *config) {
		if n < 1 {
			c.invalid("WithStackSampling", n, "must be at least 1")
			return
		}
		c.sampleEvery = int64(n)
	})
}

// WithLibraryPrefixes adds function-name prefixes (for example
// "github.com/acme/dbutil." or "github.com/acme/app.(*repo).") that are
// skipped when picking the culprit, the holder's current line and a
// waiter's line, for in-house wrappers around database/sql. They hold in
// test files too (the built-in prefixes do not: a library's own tests are
// named at their lines), and a generic function or type is matched without
// its type arguments ("(*repo[...])" as "(*repo)"). An empty prefix
// matches nothing (it would otherwise match every function), and no
// prefixes add none.
func WithLibraryPrefixes(prefixes ...string) Option {
	return optionFunc(func(c *config) { c.libraryPrefix = append(c.libraryPrefix, prefixes...) })
}

// WithReportInterval sets how often the same culprit may be reported for
// the same kind of leak. Reports in between are counted: a summary line
// ("2 more suspected leaks at app/service.go:36 (app.get) since 20:38:21")
// is logged once the interval has passed, or at Close, and a later report
// carries the count since ([Leak.Repeats]). Reports without a culprit are
// never merged. 0 turns the limit off: every report is logged, nothing is
// merged or summarised, and every stall's exhaustion warning is logged.
// Default: one minute.
func WithReportInterval(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d < 0 {
			c.invalid("WithReportInterval", d, "must not be negative")
			return
		}
		c.reportInterval = d
	})
}

// WithoutStatements keeps statement text out of reports, spans and
// [Checkouts] entirely. Statement text never includes bound arguments.
func WithoutStatements() Option {
	return optionFunc(func(c *config) { c.statements = false })
}

// WithoutGCDetection turns off the detection of Rows dropped without Close,
// which costs one runtime.AddCleanup per query on a context that cannot be
// cancelled.
func WithoutGCDetection() Option {
	return optionFunc(func(c *config) { c.gcDetection = false })
}

// WithoutServerView stops reports and [Inspect] from reading the server's
// view of held connections (pg_stat_activity, over a side connection), and
// [Terminate] and [WithTerminateStillOut] from working. Use it where the
// application's role may not open one more connection. Default: on, for
// pgx pools.
func WithoutServerView() Option {
	return optionFunc(func(c *config) { c.serverView = false })
}

// WithIdleInTransactionTimeout sets PostgreSQL's
// idle_in_transaction_session_timeout on every session [Open] makes over
// pgx's driver: the server itself ends a session that stays idle inside a
// transaction for d, rolling it back and releasing its locks. It is the
// server-side guard against a leaked transaction, beside statement_timeout
// (a statement running too long) and lock_timeout (a wait for a lock); it
// does not give database/sql its slot back (see [Terminate]). [OpenDB]
// cannot change a connector's configuration and rejects it: set
// cfg.RuntimeParams["idle_in_transaction_session_timeout"] = "30000" (ms)
// on the pgx.ConnConfig you give the connector instead. Behind PgBouncer,
// the parameter must be in its ignore_startup_parameters or set on the
// server's role.
//
// 0 turns it off: the server's own setting applies. Default: off. Ending
// a session that a slow but legitimate transaction is still using fails
// that transaction at its next statement, with a closed connection; what
// is slow enough to be a leak is the application's call, not a library's.
func WithIdleInTransactionTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d < 0 {
			c.invalid("WithIdleInTransactionTimeout", d, "must not be negative")
			return
		}
		if d > 0 && d < time.Millisecond {
			c.invalid("WithIdleInTransactionTimeout", d, "the server counts whole milliseconds")
			return
		}
		c.idleInTx = d
	})
}

// Telemetry.

// WithTracerProvider sets where leak and slow-wait spans go. A nil tp turns
// them off, as a nil logger does logging. Default:
// otel.GetTracerProvider().
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) {
		if tp == nil {
			tp = tracenoop.NewTracerProvider()
		}
		c.tracerProvider = tp
	})
}

// WithMeterProvider sets where the db.client.connection.* metrics go. A nil
// mp turns them off. Default: otel.GetMeterProvider().
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) {
		if mp == nil {
			mp = metricnoop.NewMeterProvider()
		}
		c.meterProvider = mp
	})
}

// WithSlowWaitThreshold reports a wait episode when goroutines waited for a
// connection for d or more within one sampling interval (their waits added
// up; a single wait that long counts too), or when callers have been
// waiting for d without any of them getting a connection. 0 turns wait
// spans and wait events off; the wait_time metric stays. Default:
// 100ms.
func WithSlowWaitThreshold(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d < 0 {
			c.invalid("WithSlowWaitThreshold", d, "must not be negative")
			return
		}
		c.slowWaitThreshold = d
	})
}

// WithWaitSampleInterval sets how often the pool's wait statistics
// (db.Stats().WaitCount and WaitDuration) are sampled for the wait_time
// metric, for wait episodes and for finding deadlocks. d must be
// positive: 0 is rejected, since sampling is not optional (to turn the
// wait spans and events off, use [WithSlowWaitThreshold](0)). Default:
// one second.
func WithWaitSampleInterval(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d <= 0 {
			c.invalid("WithWaitSampleInterval", d, "must be positive")
			return
		}
		c.waitInterval = d
	})
}

// WithPgBouncer is the profile for a pool that connects through PgBouncer in
// transaction pooling mode (pool_mode = transaction) before PgBouncer 1.21.
// With [Open] over pgx's driver it sets the parsed pgx.ConnConfig's
// DefaultQueryExecMode to "exec" (pgx.QueryExecModeExec), unless the DSN already
// chose "exec" or "simple_protocol"; a DSN that chose another mode makes
// Open fail.
// With [OpenDB] it cannot change the connector's pgx.ConnConfig, so it
// checks it instead: every new pgx connection whose DefaultQueryExecMode is
// not QueryExecModeExec or QueryExecModeSimpleProtocol is closed and the
// checkout fails with an error that says so. Set the mode on the config you
// give the connector:
//
//	cfg, _ := pgx.ParseConfig(dsn)
//	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
//	db, err := pgxleak.OpenDB(stdlib.GetConnector(*cfg), pgxleak.WithPgBouncer())
//
// It leaves the DSN of other drivers alone (lib/pq wants binary_parameters=yes
// behind PgBouncer, which the DSN must set), and it changes no pool size:
// every client connection costs PgBouncer a client slot, not a server
// connection, so size the pool against PgBouncer's max_client_conn and
// default_pool_size (see the capacity arithmetic in docs/tuning.md).
//
// Two things still do not work in transaction pooling mode, whatever the
// exec mode: a statement prepared with (*sql.DB).Prepare or
// (*sql.Conn).PrepareContext (pgx prepares it under a name derived from the
// query on whichever server connection PgBouncer picked, so a second client
// preparing the same query on that server connection gets "prepared
// statement ... already exists", SQLSTATE 42P05), which includes GORM's
// PrepareStmt mode; and session state (SET, LISTEN, advisory locks,
// temporary tables) outside a transaction. The backend PID in reports is
// PgBouncer's, not a server's.
func WithPgBouncer() Option {
	return optionFunc(func(c *config) { c.pgBouncer = true })
}
