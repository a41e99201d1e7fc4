package pgxleak_test

// Bad input (issue 7, RELIABILITY.md): fuzz tests for option handling, DSN
// handling and report rendering, with committed seed corpora under
// testdata/fuzz, and the rule that invalid options are rejected with
// errors that name them. Run one with, for example,
//
//	go test -run '^$' -fuzz '^FuzzOptions$' -fuzztime 1m .

import (
	"database/sql"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pgxleak/pgxleak"
)

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
			_, err := pgxleak.OpenDB(&relFakeConnector{}, tc.opt)
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
	_, err := pgxleak.OpenDB(&relFakeConnector{}, pgxleak.WithMaxOpenConns(4), pgxleak.WithMaxIdleConns(5),
		pgxleak.WithMinIdleConns(6), pgxleak.WithConnMaxLifetime(time.Minute), pgxleak.WithConnMaxLifetimeJitter(2*time.Minute),
		pgxleak.WithStackSampling(0))
	if err == nil {
		t.Fatal("OpenDB accepted four invalid options")
	}
	want := []string{"WithConnMaxLifetimeJitter", "WithMaxIdleConns", "WithMinIdleConns", "WithStackSampling"}
	if got := relOptionErrors(t, err); !slices.Equal(got, want) {
		t.Fatalf("error names %v, want %v: %v", got, want, err)
	}
	if _, err := pgxleak.OpenDB(&relFakeConnector{}, nil); err == nil || !strings.Contains(err.Error(), "nil Option") {
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

		db, err := pgxleak.OpenDB(&relFakeConnector{}, opts...)
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
		st := pgxleak.Stats(db)
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

// FuzzOpenDSN opens pools on arbitrary DSNs without connecting, through
// every entry point: no panic, and an error never quotes a password that
// the DSN gives pgx (as password=... or in URL user info).
func FuzzOpenDSN(f *testing.F) {
	for _, s := range []string{
		"postgres://app:s3cret@127.0.0.1:5432/db?sslmode=disable",
		"host=127.0.0.1 port=5432 user=app password=s3cret dbname=db",
		"postgres://app:s3cret@127.0.0.1:5432/db?default_query_exec_mode=cache_statement",
		"postgres://app:s3c%ret@[::1/db",
		"host='unterminated password=s3cret",
		"",
		"::::",
	} {
		f.Add(s)
	}
	pw := regexp.MustCompile(`(?i)password\s*=\s*'?([^\s'&]{4,})|://[^:/@]*:([^@/]{4,})@`)
	f.Fuzz(func(t *testing.T, dsn string) {
		for _, p := range []string{"passfile", "service", "sslcert", "sslkey", "sslrootcert", "sslcrl"} {
			if strings.Contains(strings.ToLower(dsn), p) {
				t.Skip() // makes pgx read files
			}
		}
		var secrets []string
		for _, m := range pw.FindAllStringSubmatch(dsn, -1) {
			for _, s := range m[1:] {
				// Only a password that appears once: elsewhere in the DSN it
				// may be a host or database name an error rightly quotes.
				if s != "" && strings.Count(dsn, s) == 1 {
					secrets = append(secrets, s)
				}
			}
		}
		check := func(what string, err error) {
			if err == nil {
				return
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Fatalf("%s(%q): error %q contains the password %q", what, dsn, err, s)
				}
			}
		}
		for _, driverName := range []string{"pgx", pgxleak.DriverName} {
			db, err := pgxleak.Open(driverName, dsn, pgxleak.WithLogger(nil), pgxleak.WithPgBouncer())
			check("Open "+driverName, err)
			if err == nil {
				if st := pgxleak.Stats(db); st.CheckedOut != 0 || st.OpenConnections != 0 {
					t.Fatalf("Open connected: %+v", st)
				}
				if err := db.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
			}
		}
		db, err := sql.Open(pgxleak.DriverName, dsn)
		check("sql.Open", err)
		if err == nil {
			_ = db.Close()
		}
	})
}

// FuzzLeakRendering renders reports, checkouts and LeakErrors built from
// arbitrary values: no panic, and each rendering carries the parts it
// promises (culprit, repeats, pool, quoted statement, stack).
func FuzzLeakRendering(f *testing.F) {
	f.Add(1, "github.com/acme/app.(*Server).getUser", "/src/app/handler.go", 42, "SELECT * FROM users WHERE id = $1", "db:5432/app", int64(7*time.Second), uint32(81234), 0, false, uint8(3))
	f.Add(2, "", "", 0, "", "", int64(0), uint32(0), 3, false, uint8(0))
	f.Add(3, "main.main", "main.go", -1, "\"quoted\"\n\ttab", "p", int64(-1), uint32(1), -1, true, uint8(255))
	f.Add(99, "a/b.c", "/x/y/z.go", 1<<40, "SELECT '%s %d %v'", "%v", int64(1)<<62, uint32(1)<<31, 1<<30, true, uint8(1))
	f.Fuzz(func(t *testing.T, kind int, fn, file string, line int, stmt, pool string, held int64, pid uint32, repeats int, resolved bool, depth uint8) {
		culprit := pgxleak.Frame{Function: fn, File: file, Line: line}
		stack := make([]pgxleak.Frame, 0, int(depth)%16+1)
		for i := range cap(stack) - 1 {
			stack = append(stack, pgxleak.Frame{Function: "database/sql.f", File: "/sql.go", Line: i})
		}
		stack = append(stack, culprit)
		co := pgxleak.Checkout{Pool: pool, Culprit: culprit, Stack: stack, CheckedOutAt: time.Unix(0, held),
			Held: time.Duration(held), BackendPID: pid, LastStatement: stmt, TxStatus: "in transaction"}
		l := pgxleak.Leak{Kind: pgxleak.LeakKind(kind), Checkout: co, Resolved: resolved, Repeats: repeats}

		loc := culprit.String()
		if loc == "" {
			t.Fatal("Frame.String is empty")
		}
		s := l.String()
		if !strings.HasPrefix(s, "pgxleak: ") || !strings.Contains(s, loc) {
			t.Fatalf("Leak.String() = %q, want the culprit %q", s, loc)
		}
		if more := fmt.Sprintf("(+%d more like it)", repeats); (repeats > 0) != strings.Contains(s, more) {
			t.Fatalf("Leak.String() = %q with %d repeats", s, repeats)
		}
		if !strings.Contains(co.String(), loc) {
			t.Fatalf("Checkout.String() = %q", co.String())
		}
		st := co.StackString()
		var wantStack strings.Builder
		for _, fr := range stack {
			fmt.Fprintf(&wantStack, "%s()\n\t%s:%d\n", fr.Function, fr.File, fr.Line)
		}
		if st != wantStack.String() {
			t.Fatalf("StackString() = %q, want %q", st, wantStack.String())
		}
		want := map[int]string{1: "suspected", 2: "garbage_collected", 3: "still_out"}[kind]
		if want == "" {
			want = fmt.Sprintf("LeakKind(%d)", kind)
		}
		if got := l.Kind.String(); got != want {
			t.Fatalf("LeakKind(%d).String() = %q, want %q", kind, got, want)
		}
		le := &pgxleak.LeakError{Checkouts: []pgxleak.Checkout{co, co}}
		e := le.Error()
		if !strings.HasPrefix(e, "pgxleak: 2 connection(s) still checked out") || strings.Count(e, loc) < 2 ||
			!strings.Contains(e, "[pool "+pool) || !strings.Contains(e, st) {
			t.Fatalf("LeakError.Error() = %q", e)
		}
		if stmt != "" && !strings.Contains(e, fmt.Sprintf("last statement %q", stmt)) {
			t.Fatalf("LeakError.Error() = %q does not quote the statement", e)
		}
	})
}
