package pgxleak

import (
	"context"
	"database/sql/driver"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// dsnInfo is what pgxleak reads from a DSN, parsed once per Open.
type dsnInfo struct {
	pgx      *pgx.ConnConfig // nil when pgx cannot parse it (a registered config's name, another driver's syntax)
	secrets  []string        // the passwords to mask in errors (see dsnSecrets)
	poolName string          // "host:port/database", never with credentials; "" when unparsed
}

func parseDSN(dsn string) dsnInfo {
	var info dsnInfo
	if cfg, err := pgx.ParseConfig(dsn); err == nil {
		info.pgx = cfg
		info.poolName = fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
	}
	info.secrets = dsnSecrets(dsn, info.pgx)
	return info
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
