package pgxleak

import (
	"context"
	"database/sql/driver"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// dsnInfo is what pgxleak reads from a DSN, parsed once per Open.
type dsnInfo struct {
	pgx      *pgx.ConnConfig // nil unless pgx v5 parsed it (another driver's DSN, a registered config's name, a malformed one)
	secrets  []string        // the passwords to mask in errors (see dsnSecrets)
	poolName string          // "host:port/database", never with credentials; "" when unparsed
}

// parseDSN parses dsn as pgx v5 does. The error is pgx's, its text not yet
// masked; info.secrets is set either way.
func parseDSN(dsn string) (dsnInfo, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return dsnInfo{secrets: dsnSecrets(dsn, nil)}, err
	}
	return dsnInfo{
		pgx:      cfg,
		secrets:  dsnSecrets(dsn, cfg),
		poolName: fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database),
	}, nil
}

// registeredConfigName reports whether dsn has the form of the names pgx's
// [stdlib.RegisterConnConfig] returns ("registeredConnConfig0"), which pgx's
// driver looks up instead of parsing.
func registeredConfigName(dsn string) bool {
	n, ok := strings.CutPrefix(dsn, "registeredConnConfig")
	if !ok || n == "" {
		return false
	}
	_, err := strconv.ParseUint(n, 10, 64)
	return err == nil
}

// connectorFor returns the connector for dsn over d. Over pgx's driver it
// connects with the configuration parsed already (and, for WithPgBouncer,
// a query exec mode PgBouncer can work with); otherwise it asks d, the way
// database/sql does. Errors are the driver's own, with the DSN's passwords
// masked: a DSN that does not parse is quoted back with best-effort
// redaction only.
func connectorFor(d driver.Driver, dsn string, info dsnInfo, pgBouncer bool) (driver.Connector, error) {
	if _, ok := d.(*stdlib.Driver); ok && info.pgx != nil {
		cfg := info.pgx
		if pgBouncer {
			if err := pgBouncerExecMode(cfg, dsn); err != nil {
				return nil, err
			}
		}
		return stdlib.GetConnector(*cfg), nil
	}
	if dc, ok := d.(driver.DriverContext); ok {
		c, err := dc.OpenConnector(dsn)
		if err != nil {
			return nil, redactError(err, info.secrets)
		}
		return c, nil
	}
	return dsnConnector{name: dsn, driver: d}, nil
}

type dsnConnector struct {
	name   string
	driver driver.Driver
}

func (c dsnConnector) Connect(context.Context) (driver.Conn, error) { return c.driver.Open(c.name) }

func (c dsnConnector) Driver() driver.Driver { return c.driver }
