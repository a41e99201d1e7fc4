package pgxleak

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak/internal/gdump"
)

// TestPendingTimeouts: a waiter seen in one dump and gone from the next
// gave up unless its goroutine checked out a connection between the dump
// that saw it waiting and the dump after the one it is gone from; while the
// ring is off nothing is counted, since nothing can be told.
func TestPendingTimeouts(t *testing.T) {
	const a, b, c = 101, 102, 103
	for _, tc := range []struct {
		name     string
		waiting  [][]uint64 // the waiters of each dump
		served   [][]uint64 // checkouts recorded before each dump
		ringOff  bool
		pending  int64
		timeouts int64
	}{
		{name: "all served",
			waiting: [][]uint64{{a, b}, {}, {}}, served: [][]uint64{nil, {a, b}, nil}},
		{name: "served just before the dump after",
			waiting: [][]uint64{{a, b}, {}, {}}, served: [][]uint64{nil, {a}, {b}}},
		{name: "one gave up",
			waiting: [][]uint64{{a, b}, {}, {}}, served: [][]uint64{nil, {a}, nil}, timeouts: 1},
		{name: "served before it was seen waiting does not count",
			waiting: [][]uint64{{a}, {}, {}}, served: [][]uint64{{a}, nil, nil}, timeouts: 1},
		{name: "still waiting",
			waiting: [][]uint64{{a}, {a, c}, {a, c}}, served: [][]uint64{nil, nil, nil}, pending: 2},
		{name: "unknown goroutine",
			waiting: [][]uint64{{0}, {}, {}}, served: [][]uint64{nil, nil, nil}},
		{name: "ring off",
			waiting: [][]uint64{{a, b}, {}, {}}, served: [][]uint64{nil, nil, nil}, ringOff: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s pendingState
			s.arm(!tc.ringOff)
			for i, ids := range tc.waiting {
				for _, id := range tc.served[i] {
					s.record(id)
				}
				from, epoch := s.position()
				s.countDump(&gdump.Snapshot{}, from, epoch, int64(i), ids)
				if !tc.ringOff {
					s.arm(len(ids) > 0)
				}
			}
			assert.Equal(t, tc.pending, s.pending.Load(), "pending")
			assert.Equal(t, tc.timeouts, s.timeouts.Load(), "timeouts")
		})
	}
}

// TestPendingIdle: without a new wait since a dump that saw no waiter (and
// no gone waiter left to classify), pending is known to be 0 without
// another dump; a dump counted twice changes nothing.
func TestPendingIdle(t *testing.T) {
	var s pendingState
	d := &gdump.Snapshot{}
	s.countDump(d, 0, 0, 7, []uint64{5})
	assert.False(t, s.idle(7), "a dump that saw a waiter")
	s.countDump(d, 0, 0, 7, nil)
	require.EqualValues(t, 1, s.pending.Load(), "the same dump again is ignored")
	s.countDump(&gdump.Snapshot{}, 0, 0, 7, nil)
	assert.False(t, s.idle(7), "the waiter gone is still to be classified")
	s.countDump(&gdump.Snapshot{}, 0, 0, 7, nil)
	assert.True(t, s.idle(7), "no waiter, no new wait")
	assert.False(t, s.idle(8), "a wait started since")
	assert.Zero(t, s.pending.Load())
}
