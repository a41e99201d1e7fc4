package pgxleak

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestJitterDueBusy: inside a driver call the jitter only tries
// database/sql's mutex. While it is held the answer is "not now", without
// waiting and without turning the jitter off; once free, the jitter applies
// again.
func TestJitterDueBusy(t *testing.T) {
	require.True(t, dbFields.ok, "this Go's sql.DB has no fields pgxleak can read")
	cfg, err := newConfig([]Option{WithConnMaxLifetime(time.Hour)})
	require.NoError(t, err)
	p := newPool(cfg, "test")
	t.Cleanup(p.close)
	p.db = sql.OpenDB(dsnConnector{driver: &sqlDriver{}})
	t.Cleanup(func() { _ = p.db.Close() })
	p.db.SetConnMaxLifetime(time.Hour)
	p.jitter.Store(true)

	mu := dbFields.mutex(p.db)
	mu.Lock()
	assert.False(t, p.jitterDue(), "jitter due while database/sql's mutex is held")
	assert.True(t, p.jitter.Load(), "a busy mutex turned the jitter off")
	mu.Unlock()
	assert.True(t, p.jitterDue(), "jitter not due with the lifetime in force")

	p.db.SetConnMaxLifetime(2 * time.Hour)
	assert.False(t, p.jitterDue(), "jitter due after db.SetConnMaxLifetime")
	assert.False(t, p.jitter.Load(), "the jitter is still on after db.SetConnMaxLifetime")
}

// TestLimitsFallback: on a Go whose sql.DB pgxleak cannot read, the
// lifetime is database/sql's alone (no jitter, no end of life of
// pgxleak's), the maximum of open connections is still the one in force,
// and Settings says the other limits are the ones Open set (the live
// page's row for it: livepage's TestSettingsRowsLimitsFromOpen).
func TestLimitsFallback(t *testing.T) {
	cfg, err := newConfig([]Option{WithMaxOpenConns(6), MaxIdleConnsForTest(4), WithConnMaxLifetime(time.Hour), ConnMaxIdleTimeForTest(time.Minute)})
	require.NoError(t, err)
	p := newPool(cfg, "test")
	t.Cleanup(p.close)
	p.fields = &sqlDBFields{} // nothing found
	p.db = sql.OpenDB(dsnConnector{driver: &sqlDriver{}})
	t.Cleanup(func() { _ = p.db.Close() })
	require.NoError(t, p.tune(context.Background(), p.db))

	assert.False(t, p.jitter.Load(), "jitter on without a way to see the lifetime in force")
	assert.Zero(t, newConn(p, nil).expiresAt, "an end of life of pgxleak's without a way to see the lifetime in force")
	p.db.SetMaxOpenConns(3)
	p.db.SetMaxIdleConns(1)
	s := p.settings()
	assert.Equal(t, Settings{Tuned: true, MaxOpen: 3, MaxIdle: 4, ConnMaxLifetime: time.Hour, ConnMaxIdleTime: time.Minute, LimitsFromOpen: true},
		Settings{Tuned: s.Tuned, MaxOpen: s.MaxOpen, MaxIdle: s.MaxIdle, ConnMaxLifetime: s.ConnMaxLifetime, ConnMaxLifetimeJitter: s.ConnMaxLifetimeJitter,
			ConnMaxIdleTime: s.ConnMaxIdleTime, LimitsFromOpen: s.LimitsFromOpen})
}
