package pgxleak_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
)

func TestCheckoutsFields(t *testing.T) {
	db, _ := openTest(t)
	ctx := context.Background()
	c, err := db.Conn(ctx)
	require.NoError(t, err)
	defer c.Close()
	var pid int
	require.NoError(t, c.QueryRowContext(ctx, "SELECT pg_backend_pid() WHERE $1::text <> ''", "argument-value").Scan(&pid))
	cs := checkouts(t, db)
	require.Len(t, cs, 1)
	co := cs[0]
	assert.Equal(t, pid, int(co.BackendPID))
	assert.Equal(t, "idle", co.TxStatus)
	assert.False(t, co.Suspected)
	assert.Positive(t, co.Held)
	assert.GreaterOrEqual(t, time.Since(co.CheckedOutAt), co.Held-time.Millisecond, "Held is at most the time since CheckedOutAt")
	assert.Equal(t, "SELECT pg_backend_pid() WHERE $1::text <> ''", co.LastStatement, "the statement's text")
	assert.NotContains(t, co.String(), "argument-value", "the statement's arguments are not recorded")
	cs, err = pgxleak.Checkouts(nil)
	assert.Nil(t, cs, "Checkouts(nil)")
	assert.ErrorIs(t, err, pgxleak.ErrNotTracked, "Checkouts(nil)")
	_, err = pgxleak.Stats(nil)
	assert.ErrorIs(t, err, pgxleak.ErrNotTracked, "Stats(nil)")
}
