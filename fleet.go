package pgxleak

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

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

// rowScanner is what both *sql.Rows and pgx.Rows offer.
type rowScanner interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

func scanFleet(rows rowScanner) ([]FleetUsage, error) {
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
}

// readServerView reads the server's limits and fleet over the pool's side
// connection (the one the stuck-pool diagnosis uses), so that an exhausted
// pool does not hold it up. ctx bounds it; the side connection's own
// timeout and back-off apply.
func (p *tracker) readServerView(ctx context.Context) (ServerView, error) {
	var v ServerView
	switch {
	case !p.cfg.serverView:
		return v, errors.New("server view off")
	case p.cfg.pgBouncer:
		return v, errors.New("behind PgBouncer: pg_stat_activity would show PgBouncer's connections, not this pool's")
	}
	err := p.stuck.side.do(ctx, func(ctx context.Context, c *pgx.Conn) error {
		var self string
		if err := c.QueryRow(ctx, limitsQuery).Scan(&v.MaxConnections, &v.ReservedConnections, &v.ClientBackends, &self); err != nil {
			return err
		}
		v.ClientBackends-- // not the side connection
		rows, err := c.Query(ctx, fleetQuery, false)
		if err != nil {
			return err
		}
		defer rows.Close()
		v.Fleet, err = scanFleet(rows)
		return err
	})
	if err != nil {
		return ServerView{}, err
	}
	v.ApplicationName = p.stuck.side.applicationName()
	v.Available = v.MaxConnections - v.ReservedConnections
	v.ReadAt = time.Now()
	return v, nil
}
