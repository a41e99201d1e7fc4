package pgxleak_test

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

func TestCheckCapacity(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(10))
	ctx := t.Context()
	one, err := pgxleak.CheckCapacity(ctx, db, 1)
	require.NoError(t, err)
	if one.MaxConnections < 10 || one.Available != one.MaxConnections-one.ReservedConnections || one.InUse < 1 {
		t.Fatalf("implausible: %+v", one)
	}
	if !one.Fits || one.Demand != 10 {
		t.Fatalf("one instance of 10 should fit: %s", one)
	}
	many, err := pgxleak.CheckCapacity(ctx, db, 1000)
	require.NoError(t, err)
	if many.Fits || many.Demand != 10000 || !strings.Contains(many.String(), "do not fit") {
		t.Fatalf("1000 instances of 10 should not fit: %s", many)
	}
	if _, err := pgxleak.CheckCapacity(ctx, db, 0); err == nil {
		t.Fatal("instances 0 accepted")
	}
}

func TestCapacityCheckOnOpenWarns(t *testing.T) {
	var buf lockedBuffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	dsn := pgtest.NewDatabase(t)
	db, err := pgxleak.Open("pgx", dsn, pgxleak.WithMaxOpenConns(50), pgxleak.WithCapacityCheck(100), pgxleak.WithLogger(logger))
	require.NoError(t, err)
	defer db.Close()
	if !strings.Contains(buf.String(), "100 instances × 50 connections = 5000 do not fit") {
		t.Fatalf("no capacity warning logged; log: %s", buf.String())
	}
}

// TestNilLoggerAndCapacityCheck: WithLogger(nil) turns logging off, also
// for the capacity warning, and the check is not a user checkout.
func TestNilLoggerAndCapacityCheck(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	db, err := pgxleak.Open("pgx", dsn, pgxleak.WithLogger(nil), pgxleak.WithMaxOpenConns(50), pgxleak.WithCapacityCheck(1000))
	require.NoError(t, err)
	defer db.Close()
	if st := pgxleak.Stats(db); st.Checkouts != 0 {
		t.Fatalf("the capacity check counted as a user checkout: %+v", st)
	}
}
