package pgxleak_test

import (
	"context"
	"errors"
	"testing"
	"time"

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
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	in := inspectUntil(t, db, "the suspected leak listed, and the server read", func(in pgxleak.Inspection) bool {
		return len(in.Reports) > 0 && in.Server != nil
	})
	if s := in.Settings; !s.Tuned || s.MaxOpen != 3 || s.LeakThreshold != 30*time.Millisecond || s.WaitSampleInterval != 20*time.Millisecond || !s.ServerView {
		t.Errorf("settings %+v", s)
	}
	r := in.Reports[0]
	if r.Kind != pgxleak.LeakSuspected || r.Kind > pgxleak.LeakStillOut || r.Count != 1 || r.Checkout == nil || r.At.Line != at.line {
		t.Errorf("report %+v: want one suspected leak at %s", r, at)
	}
	if s := in.Server; s.Instances != 1 || s.PoolMax != 3 || s.MaxConnections == 0 || s.Available != s.MaxConnections-s.ReservedConnections ||
		s.ApplicationName == "" || len(s.Fleet) == 0 || s.ReadAt.IsZero() {
		t.Errorf("server %+v", s)
	}
	if st := in.Stats; st.Suspected != 1 || st.CheckedOut != 1 || st.Closed {
		t.Errorf("stats %+v", st)
	}
}

// TestInspectNotTracked: Inspect, Stats and Checkouts say the same of a
// *sql.DB pgxleak did not open.
func TestInspectNotTracked(t *testing.T) {
	if _, err := pgxleak.Inspect(context.Background(), nil); !errors.Is(err, pgxleak.ErrNotTracked) {
		t.Errorf("Inspect: %v", err)
	}
	if _, err := pgxleak.Stats(nil); !errors.Is(err, pgxleak.ErrNotTracked) {
		t.Errorf("Stats: %v", err)
	}
	if cs, err := pgxleak.Checkouts(nil); cs != nil || !errors.Is(err, pgxleak.ErrNotTracked) {
		t.Errorf("Checkouts: %v, %v", cs, err)
	}
}
