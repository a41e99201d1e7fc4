package pgxleak_test

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// openBouncer starts a pgbouncer in transaction pooling mode for t, makes a
// database of t's own on the shared server, and opens a tracked pool through
// the bouncer with opts (which come after a quiet logger).
func compatOpenBouncer(t *testing.T, poolSize int, opts ...pgxleak.Option) (*sql.DB, *pgtest.PgBouncer, string) {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	b := pgtest.NewPgBouncer(t, pgtest.PoolSize(poolSize))
	opts = append([]pgxleak.Option{pgxleak.WithLogger(quiet)}, opts...)
	db, err := pgxleak.Open("pgx", b.DSN(dsn), opts...)
	require.NoError(t, err, "pgxleak.Open through pgbouncer")
	t.Cleanup(func() { _ = db.Close() })
	return db, b, compatDBName(t, dsn)
}

func compatDBName(t *testing.T, dsn string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	require.NoError(t, err)
	return cfg.Database
}

// TestPgBouncerQueriesAndTransactions runs queries and transactions through
// a real pgbouncer in transaction pooling mode with WithPgBouncer, from more
// client connections than the bouncer has server connections.
func TestPgBouncerQueriesAndTransactions(t *testing.T) {
	t.Parallel()
	const clients, servers = 6, 2
	db, _, name := compatOpenBouncer(t, servers, pgxleak.WithPgBouncer(), pgxleak.WithMaxOpenConns(clients))
	ctx := t.Context()

	compatExec(t, db, `CREATE TABLE accounts (id int PRIMARY KEY, owner uuid NOT NULL, balance numeric NOT NULL, meta jsonb)`)
	for i := range clients {
		_, err := db.ExecContext(ctx, `INSERT INTO accounts VALUES ($1, $2, $3, $4)`,
			i, fmt.Sprintf("00000000-0000-0000-0000-00000000000%d", i), "100.50", `{"n":1}`)
		require.NoError(t, err, "insert %d", i)
	}

	// Every client holds its own connection at the same time, then runs
	// transactions on it: client connections share server connections.
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	ready := make(chan struct{})
	var held sync.WaitGroup
	held.Add(clients)
	for i := range clients {
		wg.Go(func() {
			conn, err := db.Conn(ctx)
			held.Done()
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			<-ready
			for j := range 20 {
				tx, err := conn.BeginTx(ctx, nil)
				if err != nil {
					errs <- fmt.Errorf("client %d begin: %w", i, err)
					return
				}
				if _, err := tx.ExecContext(ctx, `UPDATE accounts SET balance = balance + $1 WHERE id = $2`, 1, i); err != nil {
					_ = tx.Rollback()
					errs <- fmt.Errorf("client %d update: %w", i, err)
					return
				}
				var owner string
				if err := tx.QueryRowContext(ctx, `SELECT owner FROM accounts WHERE id = $1 AND meta->>'n' = $2`, i, "1").Scan(&owner); err != nil {
					_ = tx.Rollback()
					errs <- fmt.Errorf("client %d select: %w", i, err)
					return
				}
				if j%5 == 4 { // every fifth one is rolled back
					err = tx.Rollback()
				} else {
					err = tx.Commit()
				}
				if err != nil {
					errs <- fmt.Errorf("client %d end: %w", i, err)
					return
				}
			}
		})
	}
	held.Wait()
	assert.Equal(t, clients, db.Stats().OpenConnections, "open client connections")
	close(ready)
	// Sample the server's view while the clients run.
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	maxServers := 0
	for running := true; running; {
		select {
		case <-finished:
			running = false
		default:
		}
		maxServers = max(maxServers, pgtest.ServerConnections(t, name))
	}
	assert.LessOrEqual(t, maxServers, servers, "server connections pg_stat_activity saw for %d clients: pgbouncer's pool", clients)
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}

	rows, err := db.QueryContext(ctx, `SELECT id, balance::text FROM accounts ORDER BY id`)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var id int
		var bal string
		require.NoError(t, rows.Scan(&id, &bal))
		assert.Equal(t, "116.50", bal, "account %d: 16 of 20 committed", id)
	}
	require.NoError(t, rows.Err())
	t.Logf("%d client connections ran their transactions on at most %d server connections", clients, maxServers)
	pgxleak.VerifyNone(t, db)
}

// TestPgBouncerLeakDetection leaks a transaction through pgbouncer and
// checks that the tracker reports it with this file's line, and that the
// server connection it pins is the one pgbouncer cannot give to others.
func TestPgBouncerLeakDetection(t *testing.T) {
	t.Parallel()
	rec := &leaktest.Recorder{}
	db, _, _ := compatOpenBouncer(t, 1, pgxleak.WithPgBouncer(), rec.Option(),
		// Long enough that BEGIN and the statement through pgbouncer are done
		// on a loaded machine before the report snapshots the tx status.
		pgxleak.WithLeakThreshold(time.Second))
	ctx := t.Context()

	_, file, line, _ := runtime.Caller(0)
	tx, err := db.BeginTx(ctx, nil) // the leak
	require.NoError(t, err)
	line++
	_, err = tx.ExecContext(ctx, "SELECT $1::int", 1)
	require.NoError(t, err)

	l := rec.Wait(t, 10*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakSuspected })
	assert.Equal(t, fmt.Sprintf("%s:%d", file, line), fmt.Sprintf("%s:%d", l.Culprit.File, l.Culprit.Line), "the culprit\n%s", stackString(l.Stack))
	assert.Equal(t, "in transaction", l.TxStatus)
	var lerr *pgxleak.LeakError
	require.ErrorAs(t, pgxleak.Find(db, pgxleak.WithGracePeriod(0)), &lerr)
	require.Len(t, lerr.Checkouts, 1)

	// The transaction pins pgbouncer's only server connection: another
	// client waits for it, which is what a leak behind a bouncer costs
	// everyone else.
	other, err := db.Conn(ctx)
	require.NoError(t, err)
	var one int
	qctx, qcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	qerr := other.QueryRowContext(qctx, "SELECT 1").Scan(&one)
	qcancel()
	assert.Error(t, qerr, "a query got a server connection while the leaked transaction held the only one")
	_ = other.Close()

	require.NoError(t, tx.Rollback())
	rec.Wait(t, 10*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.Resolved })
	pgxleak.VerifyNone(t, db)
}

// TestPgBouncerExecModes proves why WithPgBouncer exists: with pgx's default
// exec mode a query prepared on one server connection fails once pgbouncer
// gives the client another; with WithPgBouncer, or with simple_protocol in
// the DSN, it works. The sequence is deterministic: the bouncer's pool
// starts empty and has room for two server connections.
func TestPgBouncerExecModes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		dsnParam string
		opts     []pgxleak.Option
		wantCode string // "" means success
	}{
		{name: "pgx default cache_statement", wantCode: "26000"}, // prepared statement does not exist
		{name: "WithPgBouncer", opts: []pgxleak.Option{pgxleak.WithPgBouncer()}},
		{name: "DSN simple_protocol", dsnParam: "simple_protocol"},
		{name: "DSN simple_protocol with WithPgBouncer", dsnParam: "simple_protocol", opts: []pgxleak.Option{pgxleak.WithPgBouncer()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dsn := pgtest.NewDatabase(t)
			b := pgtest.NewPgBouncer(t, pgtest.PoolSize(2))
			bdsn := b.DSN(dsn)
			if tc.dsnParam != "" {
				bdsn = pgtest.WithParams(bdsn, map[string]string{"default_query_exec_mode": tc.dsnParam})
			}
			db, err := pgxleak.Open("pgx", bdsn, append([]pgxleak.Option{pgxleak.WithLogger(quiet), pgxleak.WithMaxOpenConns(2)}, tc.opts...)...)
			require.NoError(t, err)
			defer db.Close()
			ctx := t.Context()

			a, err := db.Conn(ctx)
			require.NoError(t, err)
			defer a.Close()
			const q = "SELECT $1::int + 1"
			var n int
			require.NoError(t, a.QueryRowContext(ctx, q, 1).Scan(&n), "first query")
			require.Equal(t, 2, n, "first query")
			// Another client opens a transaction: pgbouncer gives it the
			// only server connection so far, the one a's query ran on.
			c, err := db.Conn(ctx)
			require.NoError(t, err)
			defer c.Close()
			tx, err := c.BeginTx(ctx, nil)
			require.NoError(t, err)
			defer tx.Rollback()
			// a's next query gets a new server connection.
			err = a.QueryRowContext(ctx, q, 2).Scan(&n)
			if tc.wantCode == "" {
				require.NoError(t, err, "query on another server connection")
				require.Equal(t, 3, n, "query on another server connection")
				return
			}
			var pgErr *pgconn.PgError
			require.ErrorAs(t, err, &pgErr, "query on another server connection")
			require.Equal(t, tc.wantCode, pgErr.Code, "query on another server connection: SQLSTATE")
		})
	}
}

// TestPgBouncerPreparedStatementLimit documents what no exec mode fixes
// before PgBouncer 1.21: pgx prepares a *sql.Stmt under a name derived from
// its query, so a second client preparing the same query on the same server
// connection is refused (SQLSTATE 42P05).
func TestPgBouncerPreparedStatementLimit(t *testing.T) {
	t.Parallel()
	db, b, _ := compatOpenBouncer(t, 1, pgxleak.WithPgBouncer(), pgxleak.WithMaxOpenConns(2))
	if b.VersionAtLeast(1, 21) {
		t.Skipf("pgbouncer %s may keep prepared statements (max_prepared_statements); this test pins the behaviour before 1.21", b.Version())
	}
	ctx := t.Context()
	a, err := db.Conn(ctx)
	require.NoError(t, err)
	defer a.Close()
	c, err := db.Conn(ctx)
	require.NoError(t, err)
	defer c.Close()
	const q = "SELECT $1::int * 2"
	s1, err := a.PrepareContext(ctx, q)
	require.NoError(t, err)
	defer s1.Close()
	s2, err := c.PrepareContext(ctx, q)
	if err == nil {
		s2.Close()
	}
	require.Error(t, err, "a second client prepared the same statement on pgbouncer's only server connection; README's PgBouncer limits are out of date")
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr, "second prepare")
	require.Equal(t, "42P05", pgErr.Code, "second prepare: duplicate prepared statement")
}

// execMode returns the default query exec mode of one of db's pgx
// connections, read through the escape hatch.
func compatExecMode(t *testing.T, db *sql.DB) pgx.QueryExecMode {
	t.Helper()
	conn, err := db.Conn(t.Context())
	require.NoError(t, err)
	defer conn.Close()
	var mode pgx.QueryExecMode
	err = conn.Raw(func(dc any) error {
		pc, ok := pgxleak.PgxConn(dc)
		if !ok {
			return fmt.Errorf("not a pgx connection: %T", dc)
		}
		mode = pc.Config().DefaultQueryExecMode
		return nil
	})
	require.NoError(t, err)
	return mode
}
