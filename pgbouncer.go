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

// pgBouncerQueryExecMode is the pgx query exec mode that [WithPgBouncer]
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
const pgBouncerQueryExecMode = "exec"

// pgBouncerExecMode makes cfg, parsed from dsn, use pgBouncerQueryExecMode,
// unless the DSN already chose a mode PgBouncer can work with; a DSN that
// chose another mode is an error. The DSN's text is never rewritten, so
// every DSN pgx accepts works.
func pgBouncerExecMode(cfg *pgx.ConnConfig, dsn string) error {
	if strings.Contains(dsn, "default_query_exec_mode") {
		if !bouncerSafe(cfg.DefaultQueryExecMode) {
			return fmt.Errorf("pgxleak: WithPgBouncer: the DSN sets default_query_exec_mode to %q, which PgBouncer's transaction pooling breaks; use %q or \"simple_protocol\"",
				strings.ReplaceAll(cfg.DefaultQueryExecMode.String(), " ", "_"), pgBouncerQueryExecMode)
		}
		return nil
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	return nil
}

func bouncerSafe(m pgx.QueryExecMode) bool {
	return m == pgx.QueryExecModeExec || m == pgx.QueryExecModeSimpleProtocol
}

// bouncerConnector checks every new pgx connection of a connector given to
// OpenDB with WithPgBouncer for a query exec mode PgBouncer's transaction
// pooling can work with; OpenDB cannot change the connector's config.
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
