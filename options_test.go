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

	"github.com/pgxleak/pgxleak"
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
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "pgxleak: ") {
			t.Errorf("Open with an invalid %s: err = %v", tt.want, err)
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
				t.Fatal("Open accepted it")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "pgxleak:") {
				t.Fatalf("error %q does not name %s", err, tc.want)
			}
			cfg, err := pgx.ParseConfig("postgres://u:pw@127.0.0.1:5432/db")
			if err != nil {
				t.Fatal(err)
			}
			db, err = pgxleak.OpenDB(stdlib.GetConnector(*cfg), tc.opt)
			if err == nil {
				db.Close()
				t.Fatal("OpenDB accepted it")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("OpenDB error %q does not name %s", err, tc.want)
			}
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
		if m == nil {
			t.Fatalf("error line %q does not name an option (whole error: %v)", line, err)
		}
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
			_, err := pgxleak.OpenDB(&fakeConnector{}, tc.opt)
			if err == nil {
				t.Fatal("OpenDB accepted the invalid option")
			}
			if got := relOptionErrors(t, err); !slices.Equal(got, []string{tc.name}) {
				t.Fatalf("error names %v, want %s: %v", got, tc.name, err)
			}
			// Open checks options before anything else: the DSN is never
			// looked at, so nothing connects.
			if _, err := pgxleak.Open("pgx", "host=127.0.0.1 port=1", tc.opt); err == nil || !strings.Contains(err.Error(), tc.name) {
				t.Fatalf("Open: %v, want an error naming %s", err, tc.name)
			}
		})
	}
	// Combinations: every invalid option is named, and only those.
	_, err := pgxleak.OpenDB(&fakeConnector{}, pgxleak.WithMaxOpenConns(4), pgxleak.WithMaxIdleConns(5),
		pgxleak.WithMinIdleConns(6), pgxleak.WithConnMaxLifetime(time.Minute), pgxleak.WithConnMaxLifetimeJitter(2*time.Minute),
		pgxleak.WithStackSampling(0))
	if err == nil {
		t.Fatal("OpenDB accepted four invalid options")
	}
	want := []string{"WithConnMaxLifetimeJitter", "WithMaxIdleConns", "WithMinIdleConns", "WithStackSampling"}
	if got := relOptionErrors(t, err); !slices.Equal(got, want) {
		t.Fatalf("error names %v, want %v: %v", got, want, err)
	}
	if _, err := pgxleak.OpenDB(&fakeConnector{}, nil); err == nil || !strings.Contains(err.Error(), "nil Option") {
		t.Fatalf("a nil Option: %v", err)
	}
	if _, err := pgxleak.OpenDB(nil); err == nil || !strings.Contains(err.Error(), "nil connector") {
		t.Fatalf("a nil connector: %v", err)
	}
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

		db, err := pgxleak.OpenDB(&fakeConnector{}, opts...)
		if len(want) > 0 {
			if err == nil {
				_ = db.Close()
				t.Fatalf("OpenDB accepted invalid options %v", want)
			}
			if got := relOptionErrors(t, err); !slices.Equal(got, want) {
				t.Fatalf("error names %v, want %v: %v", got, want, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("OpenDB rejected valid options: %v", err)
		}
		defer db.Close()
		st := stats(t, db)
		if st.MaxOpenConnections != effOpen {
			t.Fatalf("MaxOpenConnections = %d, want %d", st.MaxOpenConnections, effOpen)
		}
		// Warm connections stay unless they expire at once.
		lasting := (effLife == 0 || effLife-effJitter >= time.Minute) && (idle == 0 || idle >= int64(time.Minute))
		if minIdle > 0 && lasting && st.Idle < minIdle {
			t.Fatalf("%d idle after warming up %d", st.Idle, minIdle)
		}
		if st.CheckedOut != 0 || st.Checkouts != 0 {
			t.Fatalf("warm-up counted as checkouts: %+v", st)
		}
	})
}

// TestOpenRefusesCheckOptions: the options of Find, VerifyNone,
// VerifyTestMain and Drain are Options too, and Open names them when it is
// given one.
func TestOpenRefusesCheckOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  pgxleak.Option
	}{
		{"GracePeriod", pgxleak.GracePeriod(time.Second)},
		{"IgnoreFunction", pgxleak.IgnoreFunction("app.f")},
		{"TerminateStillOut", pgxleak.TerminateStillOut()},
	} {
		db, err := pgxleak.OpenDB(&fakeConnector{}, tc.opt)
		if err == nil {
			db.Close()
			t.Fatalf("OpenDB accepted %s", tc.name)
		}
		if !strings.Contains(err.Error(), "pgxleak: "+tc.name+" is an option of Find") {
			t.Errorf("OpenDB(%s): %v", tc.name, err)
		}
	}
}
