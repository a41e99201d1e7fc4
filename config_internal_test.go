package pgxleak

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestConfigResolve: the defaults that follow from other settings, as
// config.go states them.
func TestConfigResolve(t *testing.T) {
	for _, tc := range []struct {
		name           string
		opts           []Option
		maxIdle        int
		lifetimeJitter time.Duration
		jittered       bool
	}{
		{"defaults", nil, defaultMaxOpenConns(), defaultConnMaxLifetime / 10, true},
		{"idle follows max open", []Option{WithMaxOpenConns(7)}, 7, defaultConnMaxLifetime / 10, true},
		{"unlimited keeps the default's idle", []Option{WithMaxOpenConns(0)}, defaultMaxOpenConns(), defaultConnMaxLifetime / 10, true},
		{"unlimited keeps the min idle", []Option{WithMaxOpenConns(0), WithMinIdleConns(defaultMaxOpenConns() + 5)}, defaultMaxOpenConns() + 5, defaultConnMaxLifetime / 10, true},
		{"jitter a tenth of the lifetime", []Option{WithConnMaxLifetime(time.Hour)}, defaultMaxOpenConns(), 6 * time.Minute, true},
		{"no lifetime, no jitter", []Option{WithConnMaxLifetime(0)}, defaultMaxOpenConns(), 0, false},
		{"a test's idle limit", []Option{WithMaxOpenConns(7), MaxIdleConnsForTest(2)}, 2, defaultConnMaxLifetime / 10, true},
		{"a test's jitter", []Option{LifetimeJitterForTest(0)}, defaultMaxOpenConns(), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := newConfig(tc.opts)
			require.NoError(t, err)
			assert.Equal(t, tc.maxIdle, c.maxIdle, "maxIdle")
			assert.Equal(t, tc.lifetimeJitter, c.lifetimeJitter, "lifetimeJitter")
			assert.Equal(t, tc.jittered, c.jittered(), "jittered")
		})
	}
}

// TestConfigResolveInvalid: the combinations resolve rejects, each named.
func TestConfigResolveInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
		want string
	}{
		{"min idle over max open", []Option{WithMaxOpenConns(3), WithMinIdleConns(4)}, "WithMinIdleConns(4)"},
		{"idle over max open", []Option{WithMaxOpenConns(3), MaxIdleConnsForTest(4)}, "maxIdle(4)"},
		{"jitter without a lifetime", []Option{WithConnMaxLifetime(0), LifetimeJitterForTest(time.Second)}, "lifetimeJitter(1s)"},
		{"jitter over the lifetime", []Option{WithConnMaxLifetime(time.Second), LifetimeJitterForTest(time.Minute)}, "lifetimeJitter(1m0s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newConfig(tc.opts)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "pgxleak: "+tc.want)
		})
	}
}
