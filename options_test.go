package pgxleak_test

import (
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/testdriver"
)

// TestTracingOptionsValidation checks the telemetry options' errors.
func TestTracingOptionsValidation(t *testing.T) {
	tests := []struct {
		opt  pgxleak.Option
		want string
	}{
		{pgxleak.WithSlowWaitThreshold(-time.Second), "WithSlowWaitThreshold"},
		{pgxleak.WithWaitSampleInterval(0), "WithWaitSampleInterval"},
		{pgxleak.WithWaitSampleInterval(-time.Second), "WithWaitSampleInterval"},
	}
	for _, tt := range tests {
		_, err := pgxleak.Open("pgxleak", "postgres://u@127.0.0.1:1/db", tt.opt)
		if assert.ErrorContains(t, err, tt.want, "Open with an invalid %s", tt.want) {
			assert.True(t, strings.HasPrefix(err.Error(), "pgxleak: "), "Open with an invalid %s: err = %v, want a pgxleak error", tt.want, err)
		}
	}
}

func TestInvalidOptions(t *testing.T) {
	for _, tc := range []struct {
		opt  pgxleak.Option
		want string
	}{
		{pgxleak.WithMaxOpenConns(-1), "WithMaxOpenConns(-1)"},
		{pgxleak.WithMaxOpenConns(-5), "WithMaxOpenConns(-5)"},
		{pgxleak.WithMaxIdleConns(-1), "WithMaxIdleConns(-1)"},
		{pgxleak.WithMaxIdleConns(1000), "WithMaxIdleConns(1000)"},
		{pgxleak.WithMinIdleConns(-1), "WithMinIdleConns(-1)"},
		{pgxleak.WithMinIdleConns(999), "WithMinIdleConns(999)"},
		{pgxleak.WithConnMaxLifetime(-time.Second), "WithConnMaxLifetime(-1s)"},
		{pgxleak.WithConnMaxLifetimeJitter(-time.Second), "WithConnMaxLifetimeJitter(-1s)"},
		{pgxleak.WithConnMaxLifetimeJitter(time.Hour), "WithConnMaxLifetimeJitter(1h0m0s)"},
		{pgxleak.WithConnMaxIdleTime(-time.Second), "WithConnMaxIdleTime(-1s)"},
		{pgxleak.WithMaxUses(-1), "WithMaxUses(-1)"},
		{pgxleak.WithPoolName(""), "WithPoolName"},
		{pgxleak.WithCapacityCheck(0), "WithCapacityCheck(0)"},
		{pgxleak.WithLeakThreshold(-time.Second), "WithLeakThreshold(-1s)"},
		{pgxleak.WithStackDepth(-1), "WithStackDepth(-1)"},
		{pgxleak.WithStackSampling(0), "WithStackSampling(0)"},
		{pgxleak.WithReportInterval(-time.Second), "WithReportInterval(-1s)"},
		{nil, "nil Option"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			db, err := pgxleak.Open("pgx", "postgres://u:pw@127.0.0.1:5432/db", tc.opt)
			if err == nil {
				db.Close()
			}
			require.ErrorContains(t, err, tc.want, "Open's error names the option")
			require.True(t, strings.HasPrefix(err.Error(), "pgxleak:"), "error %q: want a pgxleak error", err)
			cfg, err := pgx.ParseConfig("postgres://u:pw@127.0.0.1:5432/db")
			require.NoError(t, err)
			db, err = pgxleak.OpenDB(stdlib.GetConnector(*cfg), tc.opt)
			if err == nil {
				db.Close()
			}
			require.ErrorContains(t, err, tc.want, "OpenDB's error names the option")
		})
	}
}

// Bad input (issue 7, RELIABILITY.md): invalid options are rejected with
// errors that name them, and FuzzOptions (here), FuzzOpenDSN and
// FuzzLeakRendering keep seed corpora under testdata/fuzz. Run one with,
// for example,
//
//	go test -run '^$' -fuzz '^FuzzOptions$' -fuzztime 1m .

// optionErrLine matches one line of an option error: "pgxleak: Name(value): why".
var optionErrLine = regexp.MustCompile(`^pgxleak: (With[A-Za-z]+)\(`)

// relOptionErrors returns the option names an Open error names, one per
// line, and fails t on a line that names none.
func relOptionErrors(t *testing.T, err error) []string {
	t.Helper()
	var names []string
	for _, line := range strings.Split(err.Error(), "\n") {
		m := optionErrLine.FindStringSubmatch(line)
		require.NotNil(t, m, "error line %q does not name an option (whole error: %v)", line, err)
		names = append(names, m[1])
	}
	sort.Strings(names)
	return slices.Compact(names)
}

// TestInvalidOptionsNamed: every invalid option value makes Open and OpenDB
// fail with an error naming that option, and several invalid options are
// all named.
func TestInvalidOptionsNamed(t *testing.T) {
	for _, tc := range []struct {
		opt  pgxleak.Option
		name string
	}{
		{pgxleak.WithMaxOpenConns(-1), "WithMaxOpenConns"},
		{pgxleak.WithMaxOpenConns(-3), "WithMaxOpenConns"},
		{pgxleak.WithMaxIdleConns(-1), "WithMaxIdleConns"},
		{pgxleak.WithMinIdleConns(-1), "WithMinIdleConns"},
		{pgxleak.WithConnMaxLifetime(-time.Second), "WithConnMaxLifetime"},
		{pgxleak.WithConnMaxLifetimeJitter(-time.Second), "WithConnMaxLifetimeJitter"},
		{pgxleak.WithConnMaxIdleTime(-time.Second), "WithConnMaxIdleTime"},
		{pgxleak.WithMaxUses(-1), "WithMaxUses"},
		{pgxleak.WithPoolName(""), "WithPoolName"},
		{pgxleak.WithCapacityCheck(0), "WithCapacityCheck"},
		{pgxleak.WithLeakThreshold(-time.Second), "WithLeakThreshold"},
		{pgxleak.WithStackDepth(-1), "WithStackDepth"},
		{pgxleak.WithStackDepth(257), "WithStackDepth"},
		{pgxleak.WithStackSampling(0), "WithStackSampling"},
		{pgxleak.WithReportInterval(-time.Second), "WithReportInterval"},
		{pgxleak.WithSlowWaitThreshold(-time.Second), "WithSlowWaitThreshold"},
		{pgxleak.WithWaitSampleInterval(0), "WithWaitSampleInterval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pgxleak.OpenDB(&testdriver.Connector{}, tc.opt)
			require.Error(t, err, "OpenDB accepted the invalid option")
			require.Equal(t, []string{tc.name}, relOptionErrors(t, err), "the options the error names: %v", err)
			// Open checks options before anything else: the DSN is never
			// looked at, so nothing connects.
			_, err = pgxleak.Open("pgx", "host=127.0.0.1 port=1", tc.opt)
			require.ErrorContains(t, err, tc.name, "Open's error names the option")
		})
	}
	// Combinations: every invalid option is named, and only those.
	_, err := pgxleak.OpenDB(&testdriver.Connector{}, pgxleak.WithMaxOpenConns(4), pgxleak.WithMaxIdleConns(5),
		pgxleak.WithMinIdleConns(6), pgxleak.WithConnMaxLifetime(time.Minute), pgxleak.WithConnMaxLifetimeJitter(2*time.Minute),
		pgxleak.WithStackSampling(0))
	require.Error(t, err, "OpenDB accepted four invalid options")
	want := []string{"WithConnMaxLifetimeJitter", "WithMaxIdleConns", "WithMinIdleConns", "WithStackSampling"}
	require.Equal(t, want, relOptionErrors(t, err), "the options the error names: %v", err)
	_, err = pgxleak.OpenDB(&testdriver.Connector{}, nil)
	assert.ErrorContains(t, err, "nil Option")
	_, err = pgxleak.OpenDB(nil)
	assert.ErrorContains(t, err, "nil connector")
}

// FuzzOptions opens pools over the in-process driver with arbitrary option
// values and checks the result against an independent statement of the
// rules: Open fails exactly when a value is invalid, the error names
// exactly the invalid options, and a pool that opens has the settings
// asked for.
func FuzzOptions(f *testing.F) {
	// maxOpen, maxIdle, minIdle, lifetime, jitter, idle, threshold, report,
	// depth, sampling, instances, slow, interval, useIdle, useJitter, name
	f.Add(10, 5, 2, int64(time.Hour), int64(time.Minute), int64(time.Minute), int64(time.Second), int64(time.Minute), 32, 1, 1, int64(0), int64(time.Second), true, true, "pool")
	f.Add(0, -1, -1, int64(-1), int64(-1), int64(-1), int64(-1), int64(-1), -1, 0, 0, int64(-1), int64(0), true, true, "")
	f.Add(4, 5, 6, int64(time.Minute), int64(2*time.Minute), int64(0), int64(0), int64(0), 257, 1, 2, int64(time.Millisecond), int64(-5), true, true, "x")
	f.Add(1, 0, 0, int64(0), int64(1), int64(0), int64(0), int64(0), 0, 1000, 1, int64(0), int64(1), false, true, "p")
	f.Add(3, 3, 3, int64(1), int64(0), int64(1), int64(1), int64(1), 256, 7, 1, int64(1), int64(1), true, false, "p")
	f.Fuzz(func(t *testing.T, maxOpen, maxIdle, minIdle int, lifetime, jitter, idle, threshold, report int64,
		depth, sampling, instances int, slow, interval int64, useIdle, useJitter bool, name string) {
		if minIdle > 64 {
			minIdle %= 65 // a warm-up of millions of connections is not the point
		}
		opts := []pgxleak.Option{
			pgxleak.WithLogger(nil),
			pgxleak.WithMaxOpenConns(maxOpen),
			pgxleak.WithMinIdleConns(minIdle),
			pgxleak.WithConnMaxLifetime(time.Duration(lifetime)),
			pgxleak.WithConnMaxIdleTime(time.Duration(idle)),
			pgxleak.WithLeakThreshold(time.Duration(threshold)),
			pgxleak.WithReportInterval(time.Duration(report)),
			pgxleak.WithStackDepth(depth),
			pgxleak.WithStackSampling(sampling),
			pgxleak.WithPoolName(name),
			pgxleak.WithSlowWaitThreshold(time.Duration(slow)),
			pgxleak.WithWaitSampleInterval(time.Duration(interval)),
		}
		if useIdle {
			opts = append(opts, pgxleak.WithMaxIdleConns(maxIdle))
		}
		if useJitter {
			opts = append(opts, pgxleak.WithConnMaxLifetimeJitter(time.Duration(jitter)))
		}
		if instances < 1 { // a valid one would run a capacity query
			opts = append(opts, pgxleak.WithCapacityCheck(instances))
		}

		// The rules, as the option docs state them.
		var want []string
		bad := func(opt string) { want = append(want, opt) }
		effOpen := pgxleak.DefaultMaxOpenConns
		if maxOpen < 0 {
			bad("WithMaxOpenConns")
		} else {
			effOpen = maxOpen
		}
		effIdle := effOpen
		if effOpen == 0 { // unlimited
			effIdle = pgxleak.DefaultMaxOpenConns
		}
		if useIdle {
			if maxIdle < 0 {
				bad("WithMaxIdleConns")
			} else {
				effIdle = maxIdle
				if effOpen > 0 && maxIdle > effOpen {
					bad("WithMaxIdleConns")
				}
			}
		}
		if minIdle < 0 || minIdle > effIdle {
			bad("WithMinIdleConns")
		}
		effLife := pgxleak.DefaultConnMaxLifetime
		if lifetime < 0 {
			bad("WithConnMaxLifetime")
		} else {
			effLife = time.Duration(lifetime)
		}
		effJitter := effLife / 10
		if useJitter {
			if jitter < 0 {
				bad("WithConnMaxLifetimeJitter")
			} else {
				effJitter = time.Duration(jitter)
			}
		}
		if effJitter > 0 && (effLife == 0 || effJitter > effLife) {
			bad("WithConnMaxLifetimeJitter")
		}
		if idle < 0 {
			bad("WithConnMaxIdleTime")
		}
		if threshold < 0 {
			bad("WithLeakThreshold")
		}
		if report < 0 {
			bad("WithReportInterval")
		}
		if depth < 0 || depth > 256 {
			bad("WithStackDepth")
		}
		if sampling < 1 {
			bad("WithStackSampling")
		}
		if name == "" {
			bad("WithPoolName")
		}
		if slow < 0 {
			bad("WithSlowWaitThreshold")
		}
		if interval <= 0 {
			bad("WithWaitSampleInterval")
		}
		if instances < 1 {
			bad("WithCapacityCheck")
		}
		sort.Strings(want)
		want = slices.Compact(want)

		db, err := pgxleak.OpenDB(&testdriver.Connector{}, opts...)
		if len(want) > 0 {
			if err == nil {
				_ = db.Close()
			}
			require.Error(t, err, "OpenDB accepted invalid options %v", want)
			require.Equal(t, want, relOptionErrors(t, err), "the options the error names: %v", err)
			return
		}
		require.NoError(t, err, "OpenDB rejected valid options")
		defer db.Close()
		st := stats(t, db)
		require.Equal(t, effOpen, st.MaxOpenConnections, "MaxOpenConnections")
		// Warm connections stay unless they expire at once.
		lasting := (effLife == 0 || effLife-effJitter >= time.Minute) && (idle == 0 || idle >= int64(time.Minute))
		if minIdle > 0 && lasting {
			require.GreaterOrEqual(t, st.Idle, minIdle, "idle after warming up")
		}
		require.Zero(t, st.CheckedOut, "the warm-up counted as a checkout")
		require.Zero(t, st.Checkouts, "the warm-up counted as a checkout")
	})
}

// TestOpenRefusesCheckOptions: the options of Find, VerifyNone,
// VerifyTestMain and Drain are Options too, and Open names them when it is
// given one, but IgnoreFunction, which marks checkouts held on purpose
// (TestHeldOnPurpose).
func TestOpenRefusesCheckOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  pgxleak.Option
	}{
		{"GracePeriod", pgxleak.GracePeriod(time.Second)},
		{"TerminateStillOut", pgxleak.TerminateStillOut()},
	} {
		db, err := pgxleak.OpenDB(&testdriver.Connector{}, tc.opt)
		if !assert.Error(t, err, "OpenDB accepted %s", tc.name) {
			db.Close()
			continue
		}
		assert.Contains(t, err.Error(), "pgxleak: "+tc.name+" is an option of Find", "OpenDB(%s)", tc.name)
	}
}
