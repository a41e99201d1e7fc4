package pgxleak

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// maxApplicationName is the longest application_name the server keeps
// (NAMEDATALEN − 1); it truncates longer ones.
const maxApplicationName = 63

// defaultApplicationName is the application_name pgxleak gives a pool's
// sessions when the user set none: the program's name, then "/" and the
// pool's name if WithPoolName gave one ("orders-api/primary"), so that
// every program and pool sharing a server is visible in pg_stat_activity.
// The default pool name ("host:port/database") would tell the server
// nothing it does not know, so it is left out.
func defaultApplicationName(poolName string) string {
	name := filepath.Base(os.Args[0])
	if name == "" || name == "." || name == string(filepath.Separator) {
		name = "pgxleak"
	}
	if poolName != "" {
		name += "/" + poolName
	}
	if len(name) > maxApplicationName {
		cut := maxApplicationName
		for cut > 0 && !utf8.RuneStart(name[cut]) {
			cut--
		}
		name = name[:cut]
	}
	return name
}

// setApplicationName sets the default application_name on the parsed pgx
// configuration, unless the DSN or PGAPPNAME set one (pgx puts either in
// RuntimeParams).
func (info dsnInfo) setApplicationName(poolName string) {
	if info.pgx == nil {
		return
	}
	if _, ok := info.pgx.RuntimeParams["application_name"]; ok {
		return
	}
	if info.pgx.RuntimeParams == nil {
		info.pgx.RuntimeParams = make(map[string]string)
	}
	info.pgx.RuntimeParams["application_name"] = defaultApplicationName(poolName)
}

// FleetUsage is what one application_name has connected to the server
// right now, from pg_stat_activity: the fleet of programs, instances and
// pools sharing it, as the server sees it.
type FleetUsage struct {
	ApplicationName   string `json:"application_name"`    // "" for sessions that set none
	Connections       int    `json:"connections"`         // client backends with this name
	Active            int    `json:"active"`              // running a statement
	IdleInTransaction int    `json:"idle_in_transaction"` // in a transaction, between statements: the signature of a leaked Tx
	WaitingOnLock     int    `json:"waiting_on_lock"`     // waiting for a lock another backend holds
}

// fleetQuery lists client backends per application_name, the largest
// first, at most 50 names. $1 false leaves out the querying session itself (a side
// connection that is no part of any pool).
const fleetQuery = `SELECT coalesce(application_name, ''), count(*)::int,
	(count(*) FILTER (WHERE state = 'active'))::int,
	(count(*) FILTER (WHERE state LIKE 'idle in transaction%'))::int,
	(count(*) FILTER (WHERE wait_event_type = 'Lock'))::int
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND ($1 OR pid <> pg_backend_pid())
GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 50`

// limitsQuery reads the server's connection limits, the client backends
// and this session's application_name.
const limitsQuery = `SELECT
	current_setting('max_connections')::int,
	current_setting('superuser_reserved_connections')::int
	  + coalesce(current_setting('reserved_connections', true)::int, 0),
	(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int,
	current_setting('application_name')`

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func readFleet(ctx context.Context, q querier, includeSelf bool) ([]FleetUsage, error) {
	rows, err := q.QueryContext(ctx, fleetQuery, includeSelf)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []FleetUsage
	for rows.Next() {
		var f FleetUsage
		if err := rows.Scan(&f.ApplicationName, &f.Connections, &f.Active, &f.IdleInTransaction, &f.WaitingOnLock); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// ServerView is the server's side of a pool on the live page: its
// connection limits and the fleet of connections, from pg_stat_activity.
type ServerView struct {
	ReadAt              time.Time    `json:"read_at,omitzero"`      // when it was read; zero if never
	ApplicationName     string       `json:"application_name"`      // this pool's sessions' application_name
	MaxConnections      int          `json:"max_connections"`       // the server's max_connections
	ReservedConnections int          `json:"reserved_connections"`  // superuser_reserved_connections + reserved_connections
	Available           int          `json:"available"`             // MaxConnections − ReservedConnections
	ClientBackends      int          `json:"client_backends"`       // every client connection to the server now
	Fleet               []FleetUsage `json:"fleet"`                 // connections per application_name, largest first (at most 50)
	Unavailable         string       `json:"unavailable,omitempty"` // why the server could not be read now; the rest is then the last good read, if any
	Via                 string       `json:"via,omitempty"`         // how it was read: "side connection" or "pool"
}

// readServerView reads the server's limits and fleet over a side
// connection with the pool's pgx configuration, so that an exhausted pool
// does not hold it up; without one (no pgx connection open yet, or another
// driver), over the pool itself as an internal checkout. ctx bounds it.
// Errors have the configuration's password masked.
func (p *tracker) readServerView(ctx context.Context) (ServerView, error) {
	side, secrets, app := p.sideDB()
	v, err := p.readServerViewFrom(ctx, side)
	if err != nil {
		return v, redactError(err, secrets)
	}
	if side != nil {
		v.ApplicationName = app
	}
	return v, nil
}

func (p *tracker) readServerViewFrom(ctx context.Context, side *sql.DB) (ServerView, error) {
	var v ServerView
	var q querier
	switch {
	case side != nil:
		defer side.Close()
		conn, err := side.Conn(ctx)
		if err != nil {
			return v, err
		}
		defer conn.Close()
		q, v.Via = conn, "side connection"
	case p.db != nil:
		conn, err := p.db.Conn(&internalContext{ctx})
		if err != nil {
			return v, err
		}
		defer conn.Close()
		q, v.Via = conn, "pool"
	default:
		return v, fmt.Errorf("no connection of this pool is open to read it from")
	}
	if err := q.QueryRowContext(ctx, limitsQuery).Scan(&v.MaxConnections, &v.ReservedConnections, &v.ClientBackends, &v.ApplicationName); err != nil {
		return v, err
	}
	if v.Via == "side connection" {
		v.ClientBackends-- // not this one
	}
	v.Available = v.MaxConnections - v.ReservedConnections
	fleet, err := readFleet(ctx, q, v.Via == "pool")
	if err != nil {
		return v, err
	}
	v.Fleet = fleet
	v.ReadAt = time.Now()
	return v, nil
}

// sideDB returns a one-connection *sql.DB with the configuration of one of
// the pool's pgx connections, or nil if none is open; the passwords to mask
// in its errors; and the pool's application_name. It is not tracked; the
// caller closes it.
func (p *tracker) sideDB() (*sql.DB, []string, string) {
	var cfg *pgx.ConnConfig
	p.each(func(c *connState) {
		if cfg == nil && c.pgx != nil {
			cfg = c.pgx.Config() // a copy
		}
	})
	if cfg == nil {
		return nil, nil, ""
	}
	app := cfg.RuntimeParams["application_name"]
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = make(map[string]string)
	}
	cfg.RuntimeParams["application_name"] = sideApplicationName
	db := sql.OpenDB(stdlib.GetConnector(*cfg))
	db.SetMaxOpenConns(1)
	return db, dsnSecrets("", cfg), app
}
