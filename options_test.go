package pgxleak_test

import (
	"context"
	"database/sql"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
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
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

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
		{pgxleak.WithMinIdleConns(-1), "WithMinIdleConns(-1)"},
		{pgxleak.WithMinIdleConns(999), "WithMinIdleConns(999)"},
		{pgxleak.WithConnMaxLifetime(-time.Second), "WithConnMaxLifetime(-1s)"},
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
		{pgxleak.WithMinIdleConns(-1), "WithMinIdleConns"},
		{pgxleak.WithConnMaxLifetime(-time.Second), "WithConnMaxLifetime"},
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
	_, err := pgxleak.OpenDB(&testdriver.Connector{}, pgxleak.WithMaxOpenConns(4),
		pgxleak.WithMinIdleConns(6), pgxleak.WithConnMaxLifetime(-time.Minute), pgxleak.WithStackSampling(0))
	require.Error(t, err, "OpenDB accepted three invalid options")
	want := []string{"WithConnMaxLifetime", "WithMinIdleConns", "WithStackSampling"}
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
	// maxOpen, minIdle, lifetime, threshold, report, depth, sampling,
	// instances, slow, interval, name
	f.Add(10, 2, int64(time.Hour), int64(time.Second), int64(time.Minute), 32, 1, 1, int64(0), int64(time.Second), "pool")
	f.Add(0, -1, int64(-1), int64(-1), int64(-1), -1, 0, 0, int64(-1), int64(0), "")
	f.Add(4, 6, int64(time.Minute), int64(0), int64(0), 257, 1, 2, int64(time.Millisecond), int64(-5), "x")
	f.Add(1, 0, int64(0), int64(0), int64(0), 0, 1000, 1, int64(0), int64(1), "p")
	f.Add(3, 3, int64(1), int64(1), int64(1), 256, 7, 1, int64(1), int64(1), "p")
	f.Fuzz(func(t *testing.T, maxOpen, minIdle int, lifetime, threshold, report int64,
		depth, sampling, instances int, slow, interval int64, name string) {
		if minIdle > 64 {
			minIdle %= 65 // a warm-up of millions of connections is not the point
		}
		opts := []pgxleak.Option{
			pgxleak.WithLogger(nil),
			pgxleak.WithMaxOpenConns(maxOpen),
			pgxleak.WithMinIdleConns(minIdle),
			pgxleak.WithConnMaxLifetime(time.Duration(lifetime)),
			pgxleak.WithLeakThreshold(time.Duration(threshold)),
			pgxleak.WithReportInterval(time.Duration(report)),
			pgxleak.WithStackDepth(depth),
			pgxleak.WithStackSampling(sampling),
			pgxleak.WithPoolName(name),
			pgxleak.WithSlowWaitThreshold(time.Duration(slow)),
			pgxleak.WithWaitSampleInterval(time.Duration(interval)),
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
		effIdle := effOpen // MaxIdleConns is MaxOpenConns
		if effOpen == 0 {  // unlimited: the default limit or the min idle, whichever is more
			effIdle = max(pgxleak.DefaultMaxOpenConns, minIdle)
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
		lasting := effLife == 0 || effLife-effLife/10 >= time.Minute
		if minIdle > 0 && lasting {
			require.GreaterOrEqual(t, st.Idle, minIdle, "idle after warming up")
		}
		require.Zero(t, st.CheckedOut, "the warm-up counted as a checkout")
		require.Zero(t, st.Checkouts, "the warm-up counted as a checkout")
	})
}

// TestOpenRefusesCheckOptions: the options of Find, VerifyNone,
// VerifyTestMain and Drain are Options too, and Open names them when it is
// given one, but WithIgnoredFunction, which marks checkouts held on purpose
// (TestHeldOnPurpose).
func TestOpenRefusesCheckOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  pgxleak.Option
	}{
		{"WithGracePeriod", pgxleak.WithGracePeriod(time.Second)},
		{"WithTerminateStillOut", pgxleak.WithTerminateStillOut()},
	} {
		db, err := pgxleak.OpenDB(&testdriver.Connector{}, tc.opt)
		if !assert.Error(t, err, "OpenDB accepted %s", tc.name) {
			db.Close()
			continue
		}
		assert.Contains(t, err.Error(), "pgxleak: "+tc.name+" is an option of Find", "OpenDB(%s)", tc.name)
	}
}

// TestOptionsZero: every option of options.go, given zero (and a negative
// value), means what its doc says: zero turns the feature off or lifts the
// limit, or is rejected with an error naming the option where it means
// nothing; a negative value is always rejected. A new option must be
// added here.
func TestOptionsZero(t *testing.T) {
	ctx := context.Background()
	settings := func(t *testing.T, db *sql.DB) pgxleak.Settings {
		in, err := pgxleak.Inspect(ctx, db)
		require.NoError(t, err)
		return in.Settings
	}
	// held checks out a connection and returns its checkout.
	held := func(t *testing.T, db *sql.DB) pgxleak.Checkout {
		c, err := db.Conn(ctx)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		require.NoError(t, c.PingContext(ctx))
		cs := checkouts(t, db)
		require.Len(t, cs, 1)
		return cs[0]
	}
	type check func(t *testing.T, db *sql.DB, fc *testdriver.Connector)
	tests := []struct {
		option   string
		zero     pgxleak.Option
		check    check // what zero means; nil: zero is rejected
		negative pgxleak.Option
	}{
		{"WithMaxOpenConns", pgxleak.WithMaxOpenConns(0), func(t *testing.T, db *sql.DB, _ *testdriver.Connector) {
			assert.Zero(t, db.Stats().MaxOpenConnections, "unlimited")
			assert.Equal(t, pgxleak.DefaultMaxOpenConns, settings(t, db).MaxIdle)
		}, pgxleak.WithMaxOpenConns(-1)},
		{"WithMinIdleConns", pgxleak.WithMinIdleConns(0), func(t *testing.T, db *sql.DB, fc *testdriver.Connector) {
			assert.Zero(t, fc.Attempts.Load(), "no warm-up")
			assert.Zero(t, settings(t, db).MinIdle)
		}, pgxleak.WithMinIdleConns(-1)},
		{"WithConnMaxLifetime", pgxleak.WithConnMaxLifetime(0), func(t *testing.T, db *sql.DB, _ *testdriver.Connector) {
			s := settings(t, db)
			assert.Zero(t, s.ConnMaxLifetime, "forever")
			assert.Zero(t, s.ConnMaxLifetimeJitter, "a tenth of forever: none")
		}, pgxleak.WithConnMaxLifetime(-1)},
		{"WithMaxUses", pgxleak.WithMaxUses(0), func(t *testing.T, db *sql.DB, fc *testdriver.Connector) {
			assert.Zero(t, settings(t, db).MaxUses)
			for range 3 {
				_, err := db.ExecContext(ctx, "SELECT 1")
				require.NoError(t, err)
			}
			assert.EqualValues(t, 1, fc.Opened.Load(), "unlimited: one connection used three times")
		}, pgxleak.WithMaxUses(-1)},
		{"WithPoolName", pgxleak.WithPoolName(""), nil, nil},
		{"WithCapacityCheck", pgxleak.WithCapacityCheck(0), nil, pgxleak.WithCapacityCheck(-1)},
		{"WithLeakThreshold", pgxleak.WithLeakThreshold(0), func(t *testing.T, db *sql.DB, _ *testdriver.Connector) {
			assert.Zero(t, settings(t, db).LeakThreshold, "off")
		}, pgxleak.WithLeakThreshold(-1)},
		{"WithOnLeak", pgxleak.WithOnLeak(nil), func(t *testing.T, db *sql.DB, _ *testdriver.Connector) {
			held(t, db)
			cancelled, cancel := context.WithCancel(ctx)
			cancel()
			require.Error(t, pgxleak.Drain(cancelled, db), "the still-out report goes nowhere, and nothing panics")
		}, nil},
		{"WithLogger", pgxleak.WithLogger(nil), func(t *testing.T, db *sql.DB, _ *testdriver.Connector) {
			held(t, db)
			cancelled, cancel := context.WithCancel(ctx)
			cancel()
			require.Error(t, pgxleak.Drain(cancelled, db), "the still-out report is logged nowhere, and nothing panics")
		}, nil},
		{"WithStackDepth", pgxleak.WithStackDepth(0), func(t *testing.T, db *sql.DB, _ *testdriver.Connector) {
			c := held(t, db)
			assert.Empty(t, c.Stack, "no stack captured")
			assert.NotEmpty(t, c.NoCulprit)
		}, pgxleak.WithStackDepth(-1)},
		{"WithStackSampling", pgxleak.WithStackSampling(0), nil, pgxleak.WithStackSampling(-1)},
		{"WithLibraryPrefixes", pgxleak.WithLibraryPrefixes(""), func(t *testing.T, db *sql.DB, _ *testdriver.Connector) {
			assert.Contains(t, held(t, db).Culprit.File, "options_test.go", "an empty prefix matches nothing")
		}, nil},
		{"WithReportInterval", pgxleak.WithReportInterval(0), func(t *testing.T, db *sql.DB, _ *testdriver.Connector) {
			assert.Zero(t, settings(t, db).ReportInterval, "no limit")
		}, pgxleak.WithReportInterval(-1)},
		{"WithIdleInTransactionTimeout", pgxleak.WithIdleInTransactionTimeout(0), func(t *testing.T, db *sql.DB, _ *testdriver.Connector) {
			assert.Zero(t, settings(t, db).IdleInTransactionTimeout, "the server's own")
		}, pgxleak.WithIdleInTransactionTimeout(-1)},
		{"WithTracerProvider", pgxleak.WithTracerProvider(nil), func(*testing.T, *sql.DB, *testdriver.Connector) {}, nil}, // off: TestTelemetryNilProvidersOff
		{"WithMeterProvider", pgxleak.WithMeterProvider(nil), func(*testing.T, *sql.DB, *testdriver.Connector) {}, nil},
		{"WithSlowWaitThreshold", pgxleak.WithSlowWaitThreshold(0), func(t *testing.T, db *sql.DB, _ *testdriver.Connector) {
			assert.Zero(t, settings(t, db).SlowWaitThreshold, "off")
		}, pgxleak.WithSlowWaitThreshold(-1)},
		{"WithWaitSampleInterval", pgxleak.WithWaitSampleInterval(0), nil, pgxleak.WithWaitSampleInterval(-1)},
	}
	// The options that take no value.
	valueless := []string{"WithoutStatements", "WithoutGCDetection", "WithoutServerView", "WithPgBouncer"}

	rejected := func(t *testing.T, opt pgxleak.Option, name string) {
		t.Helper()
		db, err := pgxleak.OpenDB(&testdriver.Connector{}, opt)
		if err == nil {
			_ = db.Close()
		}
		require.Error(t, err)
		assert.Equal(t, []string{name}, relOptionErrors(t, err))
	}
	tested := slices.Clone(valueless)
	for _, tc := range tests {
		tested = append(tested, tc.option)
		t.Run(tc.option, func(t *testing.T) {
			if tc.negative != nil {
				rejected(t, tc.negative, tc.option)
			}
			if tc.check == nil {
				rejected(t, tc.zero, tc.option)
				return
			}
			fc := &testdriver.Connector{}
			db, err := pgxleak.OpenDB(fc, pgxleak.WithLogger(nil), tc.zero)
			require.NoError(t, err)
			defer db.Close()
			tc.check(t, db, fc)
		})
	}
	// Every option options.go defines is in the table.
	f, err := parser.ParseFile(token.NewFileSet(), "options.go", nil, 0)
	require.NoError(t, err)
	var defined []string
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil && fd.Name.IsExported() && fd.Type.Results != nil {
			if id, ok := fd.Type.Results.List[0].Type.(*ast.Ident); ok && id.Name == "Option" {
				defined = append(defined, fd.Name.Name)
			}
		}
	}
	slices.Sort(defined)
	slices.Sort(tested)
	assert.Equal(t, defined, tested)
}

// TestTelemetryNilProvidersOff: a nil tracer or meter provider turns spans
// or metrics off, as a nil logger turns logging off: nothing of the pool
// reaches the global providers, which get both without the options.
func TestTelemetryNilProvidersOff(t *testing.T) {
	o := newOTelTest(t)
	otel.SetTracerProvider(o.tp)
	otel.SetMeterProvider(o.mp)
	t.Cleanup(func() {
		otel.SetTracerProvider(tracenoop.NewTracerProvider())
		otel.SetMeterProvider(noop.NewMeterProvider())
	})
	for _, nilled := range []bool{true, false} {
		name := fmt.Sprintf("nil-providers-%v", nilled)
		opts := []pgxleak.Option{pgxleak.WithLogger(nil), pgxleak.WithPoolName(name)}
		if nilled {
			opts = append(opts, pgxleak.WithTracerProvider(nil), pgxleak.WithMeterProvider(nil))
		}
		db, err := pgxleak.OpenDB(&testdriver.Connector{}, opts...)
		require.NoError(t, err)
		c, err := db.Conn(context.Background())
		require.NoError(t, err)
		points := 0
		if sum, ok := o.collect(t)["db.client.connection.count"].Data.(metricdata.Sum[int64]); ok {
			for _, dp := range sum.DataPoints {
				if v, _ := dp.Attributes.Value("db.client.connection.pool.name"); v.AsString() == name {
					points++
				}
			}
		}
		cancelled, cancel := context.WithCancel(context.Background())
		cancel()
		require.Error(t, pgxleak.Drain(cancelled, db)) // a still_out leak span
		require.NoError(t, c.Close())
		spans := 0
		for _, s := range o.ended("pgxleak.connection.leak") {
			if attrs(s.Attributes())["db.client.connection.pool.name"].AsString() == name {
				spans++
			}
		}
		if nilled {
			assert.Zero(t, spans, "spans with a nil tracer provider")
			assert.Zero(t, points, "metrics with a nil meter provider")
		} else {
			assert.Equal(t, 1, spans, "the global tracer provider by default")
			assert.NotZero(t, points, "the global meter provider by default")
		}
	}
}
