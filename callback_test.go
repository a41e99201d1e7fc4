package pgxleak_test

import (
	"context"
	"database/sql"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// TestOnLeakMayCloseOrDrain: a callback that closes or drains the pool
// does not deadlock it.
func TestOnLeakMayCloseOrDrain(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(db *sql.DB) error
	}{
		{"Close", func(db *sql.DB) error { return db.Close() }},
		{"Drain", func(db *sql.DB) error {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			return pgxleak.Drain(ctx, db)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dsn := pgtest.NewDatabase(t)
			var db *sql.DB
			ready := make(chan struct{})
			ended := make(chan error, 1)
			var once sync.Once
			db, err := pgxleak.Open("pgx", dsn, pgxleak.WithLeakThreshold(threshold), pgxleak.WithLogger(nil),
				pgxleak.WithOnLeak(func(pgxleak.Leak) {
					once.Do(func() {
						<-ready
						ended <- tc.end(db)
					})
				}))
			require.NoError(t, err)
			close(ready)
			c, err := db.Conn(context.Background())
			require.NoError(t, err)
			defer c.Close()
			select {
			case <-ended:
			case <-time.After(10 * time.Second):
				require.FailNowf(t, "deadlock", "%s from the OnLeak callback did not return", tc.name)
			}
			assert.Error(t, db.Ping(), "the pool is still open")
		})
	}
}
