package pgxleak

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/pgxleak/pgxleak/internal/gdump"
)

// TestWaitSites: a connection the opener made is tied to the goroutine a
// dump saw wait, unless that wait had ended before the connection was
// made; a goroutine that exited is forgotten, and each wait is tied once.
func TestWaitSites(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	asked := Frame{Function: "app.handler", File: "/app/handler.go", Line: 131}
	dump := func(s int, ids ...uint64) *gdump.Snapshot {
		d := &gdump.Snapshot{Started: at(s)}
		for _, id := range ids {
			d.Goroutines = append(d.Goroutines, gdump.Goroutine{ID: id})
		}
		return d
	}
	waiter := []Goroutine{{ID: 7, At: asked}}
	for _, tc := range []struct {
		name   string
		record func(*waitSites)
		madeAt int
		want   bool
	}{
		{"seen waiting", func(w *waitSites) { w.record(dump(1, 7), waiter) }, 2, true},
		{"seen waiting, then not, after the connection was made", func(w *waitSites) {
			w.record(dump(1, 7), waiter)
			w.record(dump(3, 7), nil)
		}, 2, true},
		{"its wait ended before the connection was made", func(w *waitSites) {
			w.record(dump(1, 7), waiter)
			w.record(dump(3, 7), nil)
		}, 4, false},
		{"waiting again later", func(w *waitSites) {
			w.record(dump(1, 7), waiter)
			w.record(dump(3, 7), nil)
			w.record(dump(5, 7), waiter)
		}, 6, true},
		{"forgotten a dump after its wait was seen to end", func(w *waitSites) {
			w.record(dump(1, 7), waiter)
			w.record(dump(3, 7), nil)
			w.record(dump(5, 7), nil)
		}, 2, false},
		{"exited", func(w *waitSites) {
			w.record(dump(1, 7), waiter)
			w.record(dump(3), nil)
		}, 2, false},
		{"never seen", func(w *waitSites) { w.record(dump(1, 7, 8), []Goroutine{{ID: 8, At: asked}}) }, 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w waitSites
			tc.record(&w)
			s := w.take(7, at(tc.madeAt))
			if !tc.want {
				assert.Nil(t, s)
				return
			}
			if assert.NotNil(t, s) {
				assert.Equal(t, asked, s.at)
			}
			assert.Nil(t, w.take(7, at(tc.madeAt)), "a wait is tied to one connection")
		})
	}
	var w waitSites
	w.record(dump(1, 7), waiter)
	assert.Nil(t, w.take(0, at(2)), "without goroutine identity")
}
