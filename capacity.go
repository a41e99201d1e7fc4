package pgxleak

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Capacity is the server's connection limits and fleet, weighed against a
// pool's size: the result of [CheckCapacity], and [Inspection].Server.
type Capacity struct {
	MaxConnections      int  `json:"max_connections"`      // the server's max_connections
	ReservedConnections int  `json:"reserved_connections"` // superuser_reserved_connections + reserved_connections
	Available           int  `json:"available"`            // MaxConnections − ReservedConnections
	Headroom            int  `json:"headroom"`             // kept free for admin sessions, migrations and other clients: max(3, Available/10)
	InUse               int  `json:"in_use"`               // client backends connected now, from pg_stat_activity (a side connection not counted)
	PoolMax             int  `json:"pool_max"`             // this pool's MaxOpenConnections (0 means unlimited)
	Instances           int  `json:"instances"`            // application instances, as given (1 in an Inspection)
	Demand              int  `json:"demand"`               // Instances × PoolMax
	Fits                bool `json:"fits"`

	// ApplicationName is the application_name of db's sessions (see
	// [Open]), and Fleet the client backends connected now per
	// application_name, largest first (at most 50): the real usage of
	// every program, instance and pool sharing the server, where
	// Instances is a promise. This pool's entry counts all its instances.
	ApplicationName string       `json:"application_name"`
	Fleet           []FleetUsage `json:"fleet"`
	ReadAt          time.Time    `json:"read_at"` // when the server was read
}

// summary is the check in words, e.g. "4 instances × 10 connections = 40
// fit in 87 of max_connections 100 (97 available, 10 headroom)", as
// WithCapacityCheck logs it.
func (c Capacity) summary() string {
	budget := c.Available - c.Headroom
	if c.PoolMax == 0 {
		return fmt.Sprintf("pool has no connection limit; %d instances could exceed max_connections %d (%d available, %d headroom)",
			c.Instances, c.MaxConnections, c.Available, c.Headroom)
	}
	verb := "fit"
	if !c.Fits {
		verb = "do not fit"
	}
	return fmt.Sprintf("%d instances × %d connections = %d %s in %d of max_connections %d (%d available, %d headroom, %d in use now)",
		c.Instances, c.PoolMax, c.Demand, verb, budget, c.MaxConnections, c.Available, c.Headroom, c.InUse)
}

// CheckCapacity reads the server's max_connections,
// superuser_reserved_connections and (PostgreSQL 16+) reserved_connections,
// and the client backends in pg_stat_activity, and reports whether
// instances pools the size of db's MaxOpenConnections fit with headroom.
// It also reads the connections per application_name (Capacity.Fleet).
// It needs one connection from db for two queries.
func CheckCapacity(ctx context.Context, db *sql.DB, instances int) (Capacity, error) {
	if db == nil {
		return Capacity{}, errors.New("pgxleak: CheckCapacity: nil *sql.DB")
	}
	if instances < 1 {
		return Capacity{}, fmt.Errorf("pgxleak: CheckCapacity: instances must be at least 1, got %d", instances)
	}
	c := Capacity{Instances: instances, PoolMax: db.Stats().MaxOpenConnections}
	if err := db.QueryRowContext(ctx, limitsQuery).Scan(&c.MaxConnections, &c.ReservedConnections, &c.InUse, &c.ApplicationName); err != nil {
		return Capacity{}, fmt.Errorf("pgxleak: CheckCapacity: %w", err)
	}
	rows, err := db.QueryContext(ctx, fleetQuery, true)
	if err != nil {
		return Capacity{}, fmt.Errorf("pgxleak: CheckCapacity: %w", err)
	}
	defer rows.Close()
	fleet, err := scanFleet(rows)
	if err != nil {
		return Capacity{}, fmt.Errorf("pgxleak: CheckCapacity: %w", err)
	}
	c.Fleet = fleet
	c.compute()
	c.ReadAt = time.Now()
	return c, nil
}

// compute derives Available, Headroom, Demand and Fits from what was read.
func (c *Capacity) compute() {
	c.Available = c.MaxConnections - c.ReservedConnections
	c.Headroom = max(3, c.Available/10)
	c.Demand = c.Instances * c.PoolMax
	c.Fits = c.PoolMax > 0 && c.Demand <= c.Available-c.Headroom
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
