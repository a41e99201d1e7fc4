package pgxleak_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/faultproxy"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// blackHole is a server that accepts connections and never answers: a
// fault proxy in front of the shared PostgreSQL with every byte dropped.
// It returns a DSN that reaches it.
func blackHole(t *testing.T) (*faultproxy.Proxy, string) {
	t.Helper()
	proxy, err := faultproxy.New("127.0.0.1:5432")
	require.NoError(t, err)
	t.Cleanup(func() { _ = proxy.Close() })
	proxy.Set(faultproxy.Toxics{Timeout: true})
	return proxy, fmt.Sprintf("postgres://postgres@%s/test?sslmode=disable", proxy.Addr())
}

// TestOpenContextBounded: OpenContext returns by its context's deadline
// with a pgxleak error wrapping context.DeadlineExceeded, whichever wait
// the server never answers (the warm-up's connects, the capacity check),
// and leaves no goroutine and no connection behind.
func TestOpenContextBounded(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  pgxleak.Option
		says string
	}{
		{"warm-up", pgxleak.WithMinIdleConns(2), "WithMinIdleConns"},
		{"capacity check", pgxleak.WithCapacityCheck(1), "WithCapacityCheck"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noLeakedGoroutines(t)
			proxy, dsn := blackHole(t)
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			start := time.Now()
			db, err := pgxleak.OpenContext(ctx, "pgx", dsn, tc.opt, pgxleak.WithLogger(quiet))
			took := time.Since(start)
			require.Error(t, err)
			assert.Nil(t, db)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			assert.True(t, strings.HasPrefix(err.Error(), "pgxleak: "), "error %q", err)
			assert.Contains(t, err.Error(), tc.says)
			// Far below the 30 s Open would wait; generous for a loaded machine.
			assert.Less(t, took, 10*time.Second)
			assert.Positive(t, proxy.Accepted(), "the black hole was never reached")
			pgtest.WaitFor(t, 10*time.Second, "every connection to the black hole closed", func() bool { return proxy.Conns() == 0 })
		})
	}
}

// TestOpenDefaultLimit: Open bounds the same waits by its documented
// default (shortened here), and says so in the same way.
func TestOpenDefaultLimit(t *testing.T) {
	require.Equal(t, 30*time.Second, pgxleak.DefaultOpenTimeout, "the limit Open's godoc and the README name")
	noLeakedGoroutines(t)
	pgxleak.SetOpenTimeout(t, 200*time.Millisecond)
	proxy, dsn := blackHole(t)
	db, err := pgxleak.Open("pgx", dsn, pgxleak.WithMinIdleConns(1), pgxleak.WithLogger(quiet))
	require.Error(t, err)
	assert.Nil(t, db)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "pgxleak: warming up 1 connection (WithMinIdleConns)")
	pgtest.WaitFor(t, 10*time.Second, "every connection to the black hole closed", func() bool { return proxy.Conns() == 0 })
}

// noLeakedGoroutines fails t if goroutines started during it outlive it
// and its cleanups (registered before, it runs after them).
func noLeakedGoroutines(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}
