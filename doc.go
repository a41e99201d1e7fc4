// Package pgxleak is a database/sql driver for PostgreSQL that wraps pgx
// v5's stdlib driver (or any other driver.Connector), tunes the pool, and
// reports pooled connections that are held too long, never returned, or
// dropped without being closed — with the line of your code that took them.
//
// # Two ways to open
//
// Open is a drop-in for sql.Open that applies pgxleak's pool defaults and
// options:
//
//	db, err := pgxleak.Open("pgx", dsn, pgxleak.WithMaxOpenConns(20), pgxleak.WithMinIdleConns(4))
//
// The driver is also registered as "pgxleak", for code that calls sql.Open
// itself (sqlx.Connect, GORM's DriverName); such pools are tracked but get
// database/sql's pool defaults:
//
//	db, err := sql.Open("pgxleak", dsn)
//
// OpenDB wraps any connector: pgx's stdlib.GetConnector, go-sqlmock, lib/pq.
// Either way the result is a plain *sql.DB.
//
// # How checkouts are seen
//
// database/sql has no driver call that means "checked out", so pgxleak
// recognises a checkout by whichever comes first: Connect on the caller's
// goroutine (a new connection), ResetSession (a reused one, when the driver
// implements driver.SessionResetter, as pgx does), or the first operation on
// a connection the tracker holds as idle (one that database/sql's background
// opener handed to a waiting goroutine). A *sql.Conn taken and never used
// from a driver without ResetSession (go-sqlmock, for one) is therefore only
// seen at its first operation; pgxleak does not add ResetSession to such a
// driver, since database/sql changes its behaviour on that interface. A return
// is IsValid, which pgxleak implements for that reason, or Close. At each
// checkout the program counters of the caller's stack are recorded into a
// buffer owned by the connection; nothing is symbolised until a report is
// made.
//
// # Reports
//
// A [Leak] leads with its culprit, the first frame outside the runtime,
// database/sql, pgx, pgxleak and well-known wrappers such as sqlx and GORM:
//
//	pgxleak: suspected leak: connection checked out at app/handler.go:42 (app.getUser), held 30.002s
//
// There are three kinds: [LeakSuspected] (held past [WithLeakThreshold],
// with a "returned after" follow-up if it comes back), [LeakGarbageCollected]
// (a *sql.Rows dropped without Close; that connection is lost for good) and
// [LeakStillOut] (still out at [Drain] or Close). Reports go to log/slog,
// to [WithOnLeak], and to OpenTelemetry ([WithTracerProvider], [WithMeterProvider]).
//
// # Tests
//
// [VerifyNone] and [VerifyTestMain] fail a test, or a test binary, that
// leaves connections checked out, the way goleak does for goroutines:
//
//	func TestMain(m *testing.M) { pgxleak.VerifyTestMain(m) }
package pgxleak
