package pgxleak

import (
	"context"
	"database/sql/driver"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// PgBouncerQueryExecMode is the pgx query exec mode that [WithPgBouncer]
// selects, as pgx's default_query_exec_mode DSN parameter spells it.
//
// PgBouncer in transaction pooling mode gives a client a server connection
// for one transaction at a time (outside a transaction, for one statement),
// so whatever a statement leaves on its server connection is gone for the
// next one. Before version 1.21 (Debian 12 ships 1.18) it does not carry
// named prepared statements across server connections. pgx's default,
// "cache_statement", prepares every query as a named statement on first use
// and then refers to it by name: once PgBouncer hands the client another
// server connection, queries fail with "prepared statement ... does not
// exist" (SQLSTATE 26000). "cache_describe" and "describe_exec" use the
// unnamed statement across two round trips, which PgBouncer may also split.
// "exec" sends each query with its parameters in one round trip on the
// unnamed statement, with parameter types from the Go types of the
// arguments; "simple_protocol" interpolates the parameters on the client.
// Both work; pgx recommends "exec" over "simple_protocol".
const PgBouncerQueryExecMode = "exec"

// WithPgBouncer is the profile for a pool that connects through PgBouncer in
// transaction pooling mode (pool_mode = transaction) before PgBouncer 1.21.
// With [Open] over pgx's driver it sets the parsed pgx.ConnConfig's
// DefaultQueryExecMode to [PgBouncerQueryExecMode], unless the DSN already
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
// default_pool_size (see the README's capacity arithmetic).
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
func WithPgBouncer() Option { return pgBouncerOption{} }

type pgBouncerOption struct{}

// apply changes nothing in the pool's configuration: Open and OpenDB look
// for the option themselves (see pgBouncerConnectorFor and pgBouncerConnector).
func (pgBouncerOption) apply(*config) {}

func hasPgBouncer(opts []Option) bool {
	for _, o := range opts {
		if _, ok := o.(pgBouncerOption); ok {
			return true
		}
	}
	return false
}

// pgBouncerConnectorFor returns, when opts ask for WithPgBouncer and d is
// pgx's driver, a connector for dsn whose pgx.ConnConfig uses
// PgBouncerQueryExecMode, unless the DSN already chose a mode PgBouncer can
// work with. It parses the DSN with pgx and never rewrites its text, so
// every DSN pgx accepts works. It returns a nil connector when the option
// does not apply; a DSN pgx cannot parse is left for the driver to report.
func pgBouncerConnectorFor(d driver.Driver, dsn string, opts []Option) (driver.Connector, error) {
	if !hasPgBouncer(opts) {
		return nil, nil
	}
	if _, ok := d.(*stdlib.Driver); !ok {
		return nil, nil
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, nil
	}
	if strings.Contains(dsn, "default_query_exec_mode") {
		if !bouncerSafe(cfg.DefaultQueryExecMode) {
			return nil, fmt.Errorf("pgxleak: WithPgBouncer: the DSN sets default_query_exec_mode to %q, which PgBouncer's transaction pooling breaks; use %q or \"simple_protocol\"",
				strings.ReplaceAll(cfg.DefaultQueryExecMode.String(), " ", "_"), PgBouncerQueryExecMode)
		}
	} else {
		cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	}
	return stdlib.GetConnector(*cfg), nil
}

func bouncerSafe(m pgx.QueryExecMode) bool {
	return m == pgx.QueryExecModeExec || m == pgx.QueryExecModeSimpleProtocol
}

// pgBouncerConnector returns c, or, when opts ask for WithPgBouncer, c
// wrapped so that every new pgx connection is checked for a query exec mode
// PgBouncer's transaction pooling can work with.
func pgBouncerConnector(c driver.Connector, opts []Option) driver.Connector {
	if !hasPgBouncer(opts) {
		return c
	}
	return bouncerConnector{c}
}

type bouncerConnector struct{ inner driver.Connector }

func (b bouncerConnector) Connect(ctx context.Context) (driver.Conn, error) {
	dc, err := b.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	if sc, ok := dc.(*stdlib.Conn); ok {
		if m := sc.Conn().Config().DefaultQueryExecMode; !bouncerSafe(m) {
			_ = dc.Close()
			return nil, fmt.Errorf("pgxleak: WithPgBouncer: the connector's pgx.ConnConfig has DefaultQueryExecMode %q, which PgBouncer's transaction pooling breaks; set cfg.DefaultQueryExecMode = pgx.QueryExecModeExec before stdlib.GetConnector(cfg)", m)
		}
	}
	return dc, nil
}

func (b bouncerConnector) Driver() driver.Driver { return b.inner.Driver() }

// Close closes the wrapped connector if it is an io.Closer, as
// (*sql.DB).Close would have.
func (b bouncerConnector) Close() error {
	if cl, ok := b.inner.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}
