package pgxleak_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
)

// TestInspectSettingsReportsServer: an Inspection carries what the live
// page shows: the effective settings, the recent reports (typed kinds, with
// the leak's checkout) and the server's limits, read over the side
// connection as CheckCapacity reads them for one instance.
func TestInspectSettingsReportsServer(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithPoolName("inspect-all"), pgxleak.WithMaxOpenConns(3),
		pgxleak.WithLeakThreshold(30*time.Millisecond), pgxleak.WithWaitSampleInterval(20*time.Millisecond))
	at := lineBelow()
	conn, err := db.Conn(t.Context())
	require.NoError(t, err)
	defer conn.Close()
	in := inspectUntil(t, db, "the suspected leak listed, and the server read", func(in pgxleak.Inspection) bool {
		return len(in.Reports) > 0 && in.Server != nil
	})
	s := in.Settings
	assert.True(t, s.Tuned, "settings %+v", s)
	assert.Equal(t, 3, s.MaxOpen, "settings")
	assert.Equal(t, 30*time.Millisecond, s.LeakThreshold, "settings")
	assert.Equal(t, 20*time.Millisecond, s.WaitSampleInterval, "settings")
	assert.True(t, s.ServerView, "settings %+v", s)
	r := in.Reports[0]
	assert.Equal(t, pgxleak.LeakSuspected, r.Kind, "the report")
	assert.True(t, r.Kind.Leak(), "the report's kind is a leak")
	assert.Equal(t, 1, r.Count, "the report")
	assert.NotNil(t, r.Checkout, "the report's checkout")
	assert.Equal(t, at.Line, r.At.Line, "the report's culprit")
	sv := in.Server
	assert.Equal(t, 1, sv.Instances, "server")
	assert.Equal(t, 3, sv.PoolMax, "server")
	assert.NotZero(t, sv.MaxConnections, "server")
	assert.Equal(t, sv.MaxConnections-sv.ReservedConnections, sv.Available, "server")
	assert.NotEmpty(t, sv.ApplicationName, "server")
	assert.NotEmpty(t, sv.Fleet, "server")
	assert.False(t, sv.ReadAt.IsZero(), "server %+v", sv)
	st := in.Stats
	assert.EqualValues(t, 1, st.Suspected, "stats")
	assert.EqualValues(t, 1, st.CheckedOut, "stats")
	assert.False(t, st.Closed, "stats")
}

// TestInspectNotTracked: Inspect, Stats and Checkouts say the same of a
// *sql.DB pgxleak did not open.
func TestInspectNotTracked(t *testing.T) {
	_, err := pgxleak.Inspect(context.Background(), nil)
	assert.ErrorIs(t, err, pgxleak.ErrNotTracked, "Inspect")
	_, err = pgxleak.Stats(nil)
	assert.ErrorIs(t, err, pgxleak.ErrNotTracked, "Stats")
	cs, err := pgxleak.Checkouts(nil)
	assert.ErrorIs(t, err, pgxleak.ErrNotTracked, "Checkouts")
	assert.Nil(t, cs, "Checkouts")
}
