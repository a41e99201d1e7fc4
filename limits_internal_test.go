package pgxleak

import (
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
	p := newTracker(cfg, "test")
	t.Cleanup(p.close)
	p.db = sql.OpenDB(dsnConnector{driver: &Driver{}})
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
