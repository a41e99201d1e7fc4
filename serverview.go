package pgxleak

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

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
