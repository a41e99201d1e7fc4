package pgxleak

import "runtime"

// gcToken identifies the current checkout for a Rows cleanup. It must not
// reference the Rows.
type gcToken struct {
	c   *connState
	seq uint64
}

// gcWatch detects a Rows dropped without Close, with no allocation and no
// cleanup registration per query. Each connection has one watch, made
// (with its cleanup) the first time it is needed. wrapRows lends it to the
// wrapper of a Rows read on a context that cannot be cancelled, and the
// wrapper's Close gives it back. While lent, the wrapper holds the only
// reference to it, and database/sql's *sql.Rows the only reference to the
// wrapper; if that *sql.Rows is garbage-collected without Close, so is the
// watch, and its cleanup reports the leak. A second Rows open on the same
// connection at the same time gets a watch of its own.
type gcWatch struct {
	w *gcWatchState
}

// gcWatchState is the cleanup's argument; it must not reach the watch.
// seq is written by the owner only; the runtime orders a cleanup after the
// writes to its argument that preceded the collection (and tells the race
// detector so), so it needs no atomic.
type gcWatchState struct {
	c   *connState
	seq uint64 // the checkout being watched; 0 while not lent
}

// lendWatch returns the connection's watch, marked with the current
// checkout, for a Rows wrapper to hold. Owner-only.
func (c *connState) lendWatch() *gcWatch {
	w := c.watch
	if w == nil {
		st := &gcWatchState{c: c}
		w = &gcWatch{w: st}
		runtime.AddCleanup(w, watchCollected, st)
	} else {
		c.watch = nil
	}
	w.w.seq = c.checkouts
	return w
}

// returnWatch takes back a watch lent by lendWatch. Owner-only.
func (c *connState) returnWatch(w *gcWatch) {
	w.w.seq = 0
	if c.state != stateClosed { // a closed connection must not keep it (see closeConn)
		c.watch = w
	}
}

// watchCollected runs on the runtime's cleanup goroutine when a watch was
// garbage-collected: while lent, that means its Rows was dropped without
// Close; otherwise the connection is gone and it means nothing.
func watchCollected(st *gcWatchState) {
	if seq := st.seq; seq != 0 {
		rowsCollected(gcToken{st.c, seq})
	}
}

// rowsCollected runs on the runtime's cleanup goroutine when a watched Rows
// was garbage-collected without Close.
func rowsCollected(t gcToken) {
	c := t.c
	c.mu.Lock()
	if c.state != stateOut || c.checkouts != t.seq || c.gcLeaked {
		c.mu.Unlock()
		return
	}
	now := c.pool.now()
	c.gcLeaked, c.reportedAt[1] = true, now
	s := c.snapshotLocked(now)
	c.mu.Unlock()
	if c.pool.tracker.enqueue(report{kind: LeakGarbageCollected, snap: s}) {
		c.pool.tracker.gcLeaks.Add(1)
	}
}
