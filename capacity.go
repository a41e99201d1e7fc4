package pgxleak

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
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
		return fmt.Sprintf("pool has no connection limit; %s could exceed max_connections %d (%d available, %d headroom)",
			numbered(c.Instances, "instance", "instances"), c.MaxConnections, c.Available, c.Headroom)
	}
	verb := "fit"
	if !c.Fits {
		verb = "do not fit"
	}
	return fmt.Sprintf("%s × %s = %d %s in %d of max_connections %d (%d available, %d headroom, %d in use now)",
		numbered(c.Instances, "instance", "instances"), numbered(c.PoolMax, "connection", "connections"), c.Demand, verb, budget, c.MaxConnections, c.Available, c.Headroom, c.InUse)
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

// The server's limits and fleet ([Inspection].Server) are read at most every
// serverLimitsEvery per pool, within serverLimitsTimeout; an inspection waits
// at most serverLimitsWait for a read under way, and otherwise gives the
// previous one.
const (
	serverLimitsEvery   = 5 * time.Second
	serverLimitsTimeout = 3 * time.Second
	serverLimitsWait    = 500 * time.Millisecond
)

// serverLimits is the diagnosis's cache of the server's limits and fleet.
//
// Ownership: mu guards every field; reading is closed when the read under
// way ends.
type serverLimits struct {
	mu      sync.Mutex
	last    *Capacity     // the last good read; nil if none
	failure string        // why the last read failed; "" if it did not
	readAt  time.Time     // when the last read started
	reading chan struct{} // nil if no read is under way
}

// serverCapacity returns the server's limits and fleet for the pool, as
// CheckCapacity reads them for one instance but over the side connection,
// so that an exhausted pool does not hold it up: the cached read if it is
// recent, otherwise a fresh one if it comes within serverLimitsWait,
// otherwise the previous one. The read goes on in the background, and the
// next inspection gets it. note says why there is none, or why it is old.
func (p *pool) serverCapacity(ctx context.Context) (c *Capacity, note string) {
	if !p.cfg.serverView || p.cfg.pgBouncer || !p.diagnosis.side.configured() {
		return nil, "" // off, or no pgx connection to read it over (yet)
	}
	l := &p.diagnosis.limits
	l.mu.Lock()
	if l.reading == nil && time.Since(l.readAt) >= serverLimitsEvery {
		l.readAt = time.Now()
		done := make(chan struct{})
		l.reading = done
		read := func() {
			// The pool's Close waits for it, and cancels it.
			rctx, cancel := context.WithTimeout(p.internalCtx, serverLimitsTimeout)
			defer cancel()
			c, err := p.readServerCapacity(rctx)
			l.mu.Lock()
			if err != nil {
				l.failure = err.Error()
			} else {
				l.last, l.failure = c, ""
			}
			l.reading = nil
			l.mu.Unlock()
			close(done)
		}
		if !p.goBackground(read) {
			l.failure, l.reading = "the pool is closed", nil
		}
	}
	reading := l.reading
	l.mu.Unlock()
	if reading != nil {
		t := time.NewTimer(serverLimitsWait)
		defer t.Stop()
		select {
		case <-reading:
		case <-t.C:
		case <-ctx.Done():
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.failure != "":
		note = "server limits unavailable: " + l.failure
	case l.last == nil && l.reading != nil:
		note = "server limits unavailable: the server did not answer within " + serverLimitsWait.String() + " (a later inspection gets them when it does)"
	}
	if l.last == nil {
		return nil, note
	}
	c = new(Capacity)
	*c = *l.last
	return c, note
}

// readServerCapacity reads the server's limits and fleet over the pool's
// side connection. ctx bounds it; the side connection's own timeout and
// back-off apply.
func (p *pool) readServerCapacity(ctx context.Context) (*Capacity, error) {
	c := &Capacity{Instances: 1}
	err := p.diagnosis.side.do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
		var self string
		if err := conn.QueryRow(ctx, limitsQuery).Scan(&c.MaxConnections, &c.ReservedConnections, &c.InUse, &self); err != nil {
			return err
		}
		c.InUse-- // not the side connection
		rows, err := conn.Query(ctx, fleetQuery, false)
		if err != nil {
			return err
		}
		defer rows.Close()
		c.Fleet, err = scanFleet(rows)
		return err
	})
	if err != nil {
		return nil, err
	}
	c.ApplicationName = p.diagnosis.side.applicationName()
	if p.db != nil {
		c.PoolMax = p.db.Stats().MaxOpenConnections
	}
	c.compute()
	c.ReadAt = time.Now()
	return c, nil
}
