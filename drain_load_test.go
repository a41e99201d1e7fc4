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

// loadPool runs 40 goroutines on db until stop closes: half run queries,
// half take a db.Conn, run a query on it and close it. Errors (the pool
// draining or closed) are expected and ignored. It returns once every
// goroutine has run at least once.
func loadPool(t *testing.T, db *sql.DB, stop <-chan struct{}) *sync.WaitGroup {
	t.Helper()
	var wg sync.WaitGroup
	var started sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		started.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			first := true
			for {
				if i%2 == 0 {
					var n int
					_ = db.QueryRowContext(ctx, "SELECT 1").Scan(&n)
				} else if c, err := db.Conn(ctx); err == nil {
					_, _ = c.ExecContext(ctx, "SELECT 1")
					_ = c.Close()
				}
				if first {
					started.Done()
					first = false
				}
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	started.Wait()
	return &wg
}

// TestDrainUnderLoad: Drain under load returns nil once every checkout has
// come back, never an error that names nothing; with a real leak, the
// error lists it (and nothing it cannot name).
func TestDrainUnderLoad(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	for _, leak := range []bool{false, true} {
		for round := range 15 {
			db, err := pgxleak.Open("pgx", dsn, pgxleak.WithLogger(quiet), pgxleak.WithMaxOpenConns(10))
			require.NoError(t, err)
			var leaked *sql.Conn
			var at site
			if leak {
				leakOnPurpose(func() {
					at = lineBelow()
					leaked, err = db.Conn(context.Background())
				})
				require.NoError(t, err)
				_, err = leaked.ExecContext(context.Background(), "SELECT 1")
				require.NoError(t, err)
			}
			stop := make(chan struct{})
			wg := loadPool(t, db, stop)
			deadline := 5 * time.Second
			if leak {
				deadline = 300 * time.Millisecond // the leak never comes back
			}
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			err = pgxleak.Drain(ctx, db)
			cancel()
			close(stop)
			wg.Wait()
			if !leak {
				require.NoError(t, err, "round %d: every checkout came back", round)
			} else {
				var le *pgxleak.LeakError
				require.ErrorAs(t, err, &le, "round %d", round)
				require.Len(t, le.Checkouts, 1, "round %d: %v", round, err)
				assert.Equal(t, at.line, le.Checkouts[0].Culprit.Line, "round %d: %v", round, err)
				assert.Zero(t, le.Unlisted, "round %d: %v", round, err)
				require.NoError(t, leaked.Close())
			}
			_ = db.Close()
		}
	}
}
