package pgxleak_test

import (
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

func TestCheckCapacity(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(10))
	ctx := t.Context()
	one, err := pgxleak.CheckCapacity(ctx, db, 1)
	require.NoError(t, err)
	require.GreaterOrEqual(t, one.MaxConnections, 10, "implausible: %+v", one)
	require.Equal(t, one.MaxConnections-one.ReservedConnections, one.Available, "implausible: %+v", one)
	require.GreaterOrEqual(t, one.InUse, 1, "implausible: %+v", one)
	assert.True(t, one.Fits, "one instance of 10 should fit: %+v", one)
	assert.Equal(t, 10, one.Demand)
	many, err := pgxleak.CheckCapacity(ctx, db, 1000)
	require.NoError(t, err)
	assert.False(t, many.Fits, "1000 instances of 10 should not fit: %+v", many)
	assert.Equal(t, 10000, many.Demand)
	_, err = pgxleak.CheckCapacity(ctx, db, 0)
	assert.Error(t, err, "instances 0 accepted")
	// The pool's size in force, not Open's.
	db.SetMaxOpenConns(20)
	c, err := pgxleak.CheckCapacity(ctx, db, 2)
	require.NoError(t, err)
	assert.Equal(t, 20, c.PoolMax, "after db.SetMaxOpenConns(20)")
	assert.Equal(t, 40, c.Demand, "after db.SetMaxOpenConns(20)")
	db.SetMaxOpenConns(0)
	c, err = pgxleak.CheckCapacity(ctx, db, 2)
	require.NoError(t, err)
	assert.Zero(t, c.PoolMax, "after db.SetMaxOpenConns(0)")
	assert.False(t, c.Fits, "after db.SetMaxOpenConns(0): %+v", c)
	assert.Contains(t, pgxleak.CapacitySummary(c), "no connection limit")
}

func TestCapacityCheckOnOpenWarns(t *testing.T) {
	var buf lockedBuffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	dsn := pgtest.NewDatabase(t)
	db, err := pgxleak.Open("pgx", dsn, pgxleak.WithMaxOpenConns(50), pgxleak.WithCapacityCheck(100), pgxleak.WithLogger(logger))
	require.NoError(t, err)
	defer db.Close()
	assert.Contains(t, buf.String(), "100 instances × 50 connections = 5000 do not fit", "the capacity warning is logged")
}

// TestNilLoggerAndCapacityCheck: WithLogger(nil) turns logging off, also
// for the capacity warning, and the check is not a user checkout.
func TestNilLoggerAndCapacityCheck(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	db, err := pgxleak.Open("pgx", dsn, pgxleak.WithLogger(nil), pgxleak.WithMaxOpenConns(50), pgxleak.WithCapacityCheck(1000))
	require.NoError(t, err)
	defer db.Close()
	assert.Zero(t, stats(t, db).Checkouts, "the capacity check counted as a user checkout")
}
