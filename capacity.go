package pgxleak

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Capacity is the result of [CheckCapacity].
type Capacity struct {
	MaxConnections      int // the server's max_connections
	ReservedConnections int // superuser_reserved_connections + reserved_connections
	Available           int // MaxConnections − ReservedConnections
	Headroom            int // kept free for admin sessions, migrations and other clients: max(3, Available/10)
	InUse               int // client backends connected now, from pg_stat_activity
	PoolMax             int // this pool's MaxOpenConnections (0 means unlimited)
	Instances           int // application instances, as given
	Demand              int // Instances × PoolMax
	Fits                bool

	// ApplicationName is the application_name of db's sessions (see
	// [Open]), and Fleet the client backends connected now per
	// application_name, largest first (at most 50): the real usage of
	// every program, instance and pool sharing the server, where
	// Instances is a promise. This pool's entry counts all its instances.
	ApplicationName string
	Fleet           []FleetUsage
}

// String summarises the check, e.g. "4 instances × 10 connections = 40 fit
// in 87 of max_connections 100 (97 available, 10 headroom)".
func (c Capacity) String() string {
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
	c.Available = c.MaxConnections - c.ReservedConnections
	c.Headroom = max(3, c.Available/10)
	c.Demand = instances * c.PoolMax
	c.Fits = c.PoolMax > 0 && c.Demand <= c.Available-c.Headroom
	return c, nil
}
