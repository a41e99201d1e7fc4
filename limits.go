package pgxleak

import (
	"database/sql"
	"reflect"
	"sync"
	"time"
	"unsafe"
)

// The pool limits in force, read back from database/sql.
//
// database/sql enforces the four limits (SetMaxOpenConns, SetMaxIdleConns,
// SetConnMaxLifetime, SetConnMaxIdleTime) and pgxleak leaves them to it:
// Open applies the options through those setters, and a user who calls
// them later (as GORM's and sqlx's docs say to) gets exactly what a plain
// pool does. But the features that depend on the limits (the min-idle
// keeper, the lifetime jitter, the live page, the metrics and the
// slow-wait spans) must see the values in force, and database/sql reports
// only one of them: DBStats.MaxOpenConnections. The rest are unexported
// fields of sql.DB, guarded by its mutex mu (sql.go, type DB, in Go 1.25
// through 1.27). pgxleak reads them the way (*sql.DB).Stats reads maxOpen:
// under that mutex, writing nothing but the lock. It finds them once, by name
// and type; TestLimitsRead fails on a Go whose sql.DB has moved them, and
// then pgxleak falls back (see poolLimits.read): the lifetime is
// database/sql's alone, without jitter, and the page says the other limits
// are the ones Open set.
//
// Taking database/sql's mutex is safe where db.Stats() is: on a goroutine
// that holds none of the pool's locks, since database/sql calls no
// driver code while it holds mu. Inside a driver call it is not, because
// database/sql then holds the connection's own lock, and it takes a
// connection's lock while holding mu (closeDBLocked from DB.Close,
// noteUnusedDriverStatement), if only for connections not in use. So the
// one read inside a driver call (jitterDue) only tries the mutex, and
// gives up if it is held.

// poolLimits are the limits database/sql enforces on one *sql.DB, as its
// setters last left them.
type poolLimits struct {
	maxOpen     int           // 0 means unlimited
	maxIdle     int           // as database/sql applies it: 2 if never set, 0 for none
	maxLifetime time.Duration // 0 means forever
	maxIdleTime time.Duration // 0 means forever
	// read is false when this Go's sql.DB could not be read: maxOpen is
	// then still the one in force (from Stats), the others are the values
	// Open set.
	read bool
}

// sqlDBFields are the offsets in sql.DB of its mutex and the limits it
// guards; ok is false if this Go's sql.DB lacks one of them, by name and
// type.
type sqlDBFields struct {
	ok                                                  bool
	mu, maxIdleCount, maxOpen, maxLifetime, maxIdleTime uintptr
}

var dbFields = findDBFields()

func findDBFields() sqlDBFields {
	var f sqlDBFields
	t := reflect.TypeFor[sql.DB]()
	for _, want := range []struct {
		name string
		typ  reflect.Type
		off  *uintptr
	}{
		{"mu", reflect.TypeFor[sync.Mutex](), &f.mu},
		{"maxIdleCount", reflect.TypeFor[int](), &f.maxIdleCount}, // zero means defaultMaxIdleConns; negative means 0
		{"maxOpen", reflect.TypeFor[int](), &f.maxOpen},           // <= 0 means unlimited
		{"maxLifetime", reflect.TypeFor[time.Duration](), &f.maxLifetime},
		{"maxIdleTime", reflect.TypeFor[time.Duration](), &f.maxIdleTime},
	} {
		sf, ok := t.FieldByName(want.name)
		if !ok || sf.Type != want.typ || len(sf.Index) != 1 {
			return sqlDBFields{}
		}
		*want.off = sf.Offset
	}
	f.ok = true
	return f
}

// defaultMaxIdleConns is database/sql's idle limit when SetMaxIdleConns
// was never called (sql.go, defaultMaxIdleConns).
const defaultMaxIdleConns = 2

func (f *sqlDBFields) mutex(db *sql.DB) *sync.Mutex {
	return (*sync.Mutex)(unsafe.Add(unsafe.Pointer(db), f.mu))
}

// limitsLocked reads db's limits; db's mutex is held. maxIdle is what
// database/sql's maxIdleConnsLocked makes of maxIdleCount.
func (f *sqlDBFields) limitsLocked(db *sql.DB) poolLimits {
	base := unsafe.Pointer(db)
	l := poolLimits{
		maxOpen:     max(*(*int)(unsafe.Add(base, f.maxOpen)), 0),
		maxIdle:     *(*int)(unsafe.Add(base, f.maxIdleCount)),
		maxLifetime: *(*time.Duration)(unsafe.Add(base, f.maxLifetime)),
		maxIdleTime: *(*time.Duration)(unsafe.Add(base, f.maxIdleTime)),
		read:        true,
	}
	switch {
	case l.maxIdle == 0:
		l.maxIdle = defaultMaxIdleConns
	case l.maxIdle < 0:
		l.maxIdle = 0
	}
	return l
}

// read returns db's limits in force; c gives the fallback's values. It
// locks database/sql's mutex, as db.Stats() does: it must not be called
// from a driver call, nor with a lock of the pool held.
func (f *sqlDBFields) read(db *sql.DB, c *config) poolLimits {
	if !f.ok {
		return poolLimits{maxOpen: db.Stats().MaxOpenConnections, maxIdle: c.maxIdle, maxLifetime: c.maxLifetime, maxIdleTime: c.maxIdleTime}
	}
	mu := f.mutex(db)
	mu.Lock()
	defer mu.Unlock()
	return f.limitsLocked(db)
}

// tryRead is read for a driver call: ok is false, at once, if
// database/sql's mutex is held or sql.DB could not be read.
func (f *sqlDBFields) tryRead(db *sql.DB) (l poolLimits, ok bool) {
	if !f.ok {
		return l, false
	}
	mu := f.mutex(db)
	if !mu.TryLock() {
		return l, false
	}
	defer mu.Unlock()
	return f.limitsLocked(db), true
}

// limits returns the limits in force on p's pool, opened by Open or
// OpenDB (p.db is not nil). Seeing a lifetime other than pgxleak's turns
// the jitter off (see jitterDue).
func (p *pool) limits() poolLimits {
	l := p.fields.read(p.db, p.cfg)
	if l.read && l.maxLifetime != p.cfg.maxLifetime {
		p.jitter.Store(false)
	}
	return l
}

// minIdle is the number of idle connections the keeper keeps under l:
// WithMinIdleConns, but no more than database/sql keeps idle.
func (p *pool) minIdle(l poolLimits) int { return min(p.cfg.minIdle, l.maxIdle) }

// jitterDue reports whether a connection past its jittered end of life
// (connState.expiresAt) is discarded now. The jitter only shortens the
// lifetime pgxleak set (WithConnMaxLifetime, applied with
// db.SetConnMaxLifetime; database/sql enforces the lifetime itself), so it
// applies only while that lifetime is still the one in force. Once a
// db.SetConnMaxLifetime with another value is seen, the jitter is off for
// good and database/sql's lifetime is all there is, exactly as in a plain
// pool.
//
// It runs inside ResetSession and IsValid, but only for a connection past
// its jittered end: once per connection, not per checkout. If database/sql's
// mutex is busy, it says no, and the next checkout or return asks again;
// database/sql still closes the connection at the full lifetime.
func (p *pool) jitterDue() bool {
	if !p.jitter.Load() {
		return false
	}
	l, ok := p.fields.tryRead(p.db)
	if !ok {
		return false
	}
	if l.maxLifetime != p.cfg.maxLifetime {
		p.jitter.Store(false)
		return false
	}
	return true
}
