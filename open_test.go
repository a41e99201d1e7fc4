package pgxleak_test

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/pgxleak/pgxleak/internal/testdriver"
)

func TestOpenUnknownDriver(t *testing.T) {
	_, err := pgxleak.Open("no-such-driver", "whatever")
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "pgxleak:"), "err = %v: want a pgxleak error", err)
	assert.Contains(t, err.Error(), "no-such-driver", "the error names the driver")
}

// TestOpenErrorsHidePassword covers bad DSNs and unreachable hosts: the
// error must say what went wrong without the password.
func TestOpenErrorsHidePassword(t *testing.T) {
	const pw = "s3cr3t-pa55"
	for _, tc := range []struct{ name, dsn string }{
		{"bad port", "postgres://app:" + pw + "@127.0.0.1:notaport/db"},
		{"bad url", "postgres://app:" + pw + "@[::1/db"},
		{"unreachable", "postgres://app:" + pw + "@127.0.0.1:1/db?connect_timeout=2"},
		{"keyword form", "host=127.0.0.1 port=1 user=app password=" + pw + " connect_timeout=2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := pgxleak.Open("pgx", tc.dsn, pgxleak.WithMinIdleConns(1))
			if err == nil {
				db.Close()
			}
			require.Error(t, err, "Open succeeded")
			assert.NotContains(t, err.Error(), pw, "the error contains the password")
		})
	}
}

// TestOpenIdleInTransactionTimeout: the option reaches every session Open
// makes, in the startup message; OpenDB, which cannot change a connector's
// configuration, says how to set it instead.
func TestOpenIdleInTransactionTimeout(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithIdleInTransactionTimeout(1500*time.Millisecond))
	var got string
	require.NoError(t, db.QueryRow("SHOW idle_in_transaction_session_timeout").Scan(&got))
	assert.Equal(t, "1500ms", got, "idle_in_transaction_session_timeout")
	plain, _ := openTest(t)
	require.NoError(t, plain.QueryRow("SHOW idle_in_transaction_session_timeout").Scan(&got))
	assert.Equal(t, "0", got, "by default idle_in_transaction_session_timeout is the server's")
	_, err := pgxleak.OpenDB(stdlib.GetConnector(pgx.ConnConfig{}), pgxleak.WithIdleInTransactionTimeout(time.Second))
	assert.ErrorContains(t, err, `RuntimeParams["idle_in_transaction_session_timeout"]`, "OpenDB with WithIdleInTransactionTimeout says how to set it")
}

// recordingDriverName is the name recording is registered under: a driver
// that is neither pgx nor pgxleak, for the tests of Open's lookup by name.
const recordingDriverName = "pgxleak-test-recording"

var recording = &recordingDriver{dsns: make(map[string]int)}

func init() { sql.Register(recordingDriverName, recording) }

// recordingDriver counts its Connect calls per DSN; its connections are
// testdriver.Connector's.
type recordingDriver struct {
	fake testdriver.Connector
	mu   sync.Mutex
	dsns map[string]int
}

func (d *recordingDriver) connects(dsn string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dsns[dsn]
}

func (d *recordingDriver) Open(name string) (driver.Conn, error) {
	return recordingConnector{d, name}.Connect(context.Background())
}

func (d *recordingDriver) OpenConnector(name string) (driver.Connector, error) {
	return recordingConnector{d, name}, nil
}

type recordingConnector struct {
	d   *recordingDriver
	dsn string
}

func (c recordingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	c.d.mu.Lock()
	c.d.dsns[c.dsn]++
	c.d.mu.Unlock()
	return c.d.fake.Connect(ctx)
}

func (c recordingConnector) Driver() driver.Driver { return c.d }

// TestOpenWrapsTheRegisteredDriver: Open over a name that is not pgx's
// connects with the driver registered under it, given the DSN as is: not
// parsed as pgx's (neither rejected nor named after what pgx reads in it).
func TestOpenWrapsTheRegisteredDriver(t *testing.T) {
	for _, dsn := range []string{
		"not a dsn",
		"postgres://app:s3cret@db.example:notaport/orders", // pgx: invalid port
		"postgres://app@db.example:5432/orders",            // pgx would name the pool db.example:5432/orders
	} {
		t.Run(dsn, func(t *testing.T) {
			db, err := pgxleak.Open(recordingDriverName, dsn, pgxleak.WithLogger(nil))
			require.NoError(t, err)
			defer db.Close()
			_, err = pgxleak.Stats(db)
			require.NoError(t, err, "the pool is not pgxleak's")

			before := recording.connects(dsn)
			c, err := db.Conn(t.Context())
			require.NoError(t, err)
			assert.Equal(t, before+1, recording.connects(dsn), "Connect calls of the registered driver with this DSN")
			cs := checkouts(t, db)
			if assert.Len(t, cs, 1) {
				assert.Empty(t, cs[0].Pool, "pool name: the DSN is not pgx's to read")
			}
			require.NoError(t, c.Close())
			st := stats(t, db)
			assert.Equal(t, uint64(1), st.Checkouts)
			assert.Equal(t, uint64(1), st.Returns)
		})
	}
}

// TestOpenPgxNameTakenByAnotherDriver: in a program where another driver
// registered "pgx" before pgx v5's stdlib could (pgx v4's stdlib does, in
// bun's test suite), Open("pgx", dsn) wraps that driver and leaves the DSN
// to it, and "pgx/v5" still means pgx v5. Only a package whose import path
// sorts before pgx's can register first (see testdata/pgxtaken/takepgx), so
// the program is built as a module of its own.
func TestOpenPgxNameTakenByAnotherDriver(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	dir, goIn := goModule(ctx, t, "pgxtaken", "example.com/pgxtaken")
	prog := filepath.Join(dir, "pgxtaken")
	goIn("build", "-mod=mod", "-o", prog, ".")

	const dsn = "not a dsn" // pgx v5 rejects it; the driver holding "pgx" takes anything
	var stderr bytes.Buffer
	run := exec.CommandContext(ctx, prog, dsn)
	run.Stderr = &stderr
	out, err := run.Output()
	require.NoError(t, err, "pgxtaken: %s", stderr.String())
	var got struct {
		PgxHolder      string
		OpenErr        string
		PingErr        string
		Connects       []string
		Checkouts      uint64
		V5ParseErr     string
		V5ParseErrIsPg bool
	}
	require.NoError(t, json.Unmarshal(out, &got), "%s", out)
	require.Equal(t, "takepgx", got.PgxHolder, "the program's own driver must hold \"pgx\" (Go's package initialization order)")
	assert.Empty(t, got.OpenErr, `pgxleak.Open("pgx", dsn)`)
	assert.Empty(t, got.PingErr, "the first connection")
	assert.Equal(t, []string{dsn}, got.Connects, `Connect calls of the driver registered as "pgx"`)
	assert.Equal(t, uint64(1), got.Checkouts, "checkouts tracked")
	assert.True(t, strings.HasPrefix(got.V5ParseErr, "pgxleak: Open: "), `pgxleak.Open("pgx/v5", dsn) = %q; want pgx v5's parse error`, got.V5ParseErr)
	assert.True(t, got.V5ParseErrIsPg, "errors.As(err, *pgconn.ParseConfigError)")
}

// The DSNs below carry this password; no error may quote it.
const badDSNPassword = "s3cr3t-pa55"

// badDSNs are DSNs pgx cannot parse, in both forms, with what pgx says.
var badDSNs = []struct{ name, dsn, want string }{
	{"keyword/value: not a dsn", "not a dsn", "invalid keyword/value"},
	{"keyword/value: bad port", "host=127.0.0.1 port=notaport user=app password=" + badDSNPassword, "invalid port"},
	{"keyword/value: bad sslmode", "host=127.0.0.1 sslmode=bogus user=app password=" + badDSNPassword, "sslmode is invalid"},
	{"keyword/value: bad connect_timeout", "host=127.0.0.1 password=" + badDSNPassword + " connect_timeout=abc", "invalid connect_timeout"},
	{"keyword/value: unterminated quote", "host='127.0.0.1 password=" + badDSNPassword, "unterminated quoted string"},
	{"keyword/value: quoted password", "host=127.0.0.1 password='" + badDSNPassword + " x' port=notaport", "invalid port"},
	// pgx's own masking misses a password written with spaces around "=".
	{"keyword/value: spaces around =", "host=127.0.0.1 password = " + badDSNPassword + " port=notaport", "invalid port"},
	{"URL: bad port", "postgres://app:" + badDSNPassword + "@127.0.0.1:notaport/db", "invalid port"},
	{"URL: port out of range", "postgres://app:" + badDSNPassword + "@127.0.0.1:99999/db", "invalid port"},
	{"URL: bad sslmode", "postgres://app:" + badDSNPassword + "@127.0.0.1/db?sslmode=bogus", "sslmode is invalid"},
	{"URL: bad target_session_attrs", "postgresql://app:" + badDSNPassword + "@127.0.0.1/db?target_session_attrs=bogus", "target_session_attrs"},
	{"URL: unterminated IPv6 host", "postgres://app:" + badDSNPassword + "@[::1/db", "failed to parse as URL"},
	{"URL: bad escape in the password", "postgres://app:" + badDSNPassword + "%zz@127.0.0.1/db", "failed to parse as URL"},
	{"URL: password in the query", "postgres://127.0.0.1:notaport/db?password=" + badDSNPassword, "invalid port"},
}

// pgxNames are the names Open resolves to pgx v5's driver in this binary.
var pgxNames = []string{"pgx", "pgx/v5", "pgxleak"}

// assertNoPassword checks every rendering of err for badDSNPassword.
func assertNoPassword(t *testing.T, err error) {
	t.Helper()
	for _, verb := range []string{"%v", "%+v", "%q"} {
		assert.NotContains(t, fmt.Sprintf(verb, err), badDSNPassword, "the error, formatted with %s", verb)
	}
}

// TestOpenBadDSN: Open over pgx's driver returns pgx's parse error at once,
// prefixed, with the password masked, and unwrapping to pgx's error.
func TestOpenBadDSN(t *testing.T) {
	for _, tc := range badDSNs {
		for _, name := range pgxNames {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				db, err := pgxleak.Open(name, tc.dsn, pgxleak.WithLogger(nil))
				if db != nil {
					_ = db.Close()
				}
				require.Error(t, err, "Open succeeded")
				assert.True(t, strings.HasPrefix(err.Error(), "pgxleak: Open: "), "error %q: want the pgxleak: Open: prefix", err)
				assert.Contains(t, err.Error(), tc.want)
				var pe *pgconn.ParseConfigError
				assert.ErrorAs(t, err, &pe)
				assertNoPassword(t, err)
			})
		}
	}
}

// TestOpenGoodDSN: DSNs pgx parses still open, without connecting; so does
// a name stdlib.RegisterConnConfig returned, which pgx's driver looks up
// instead of parsing.
func TestOpenGoodDSN(t *testing.T) {
	for _, dsn := range []string{
		"postgres://app:" + badDSNPassword + "@127.0.0.1:5432/db?sslmode=disable",
		"postgresql://app@127.0.0.1/db?connect_timeout=5&target_session_attrs=any",
		"postgres:///db?host=/tmp",
		"host=127.0.0.1 port=5432 user=app password=" + badDSNPassword + " dbname=db sslmode=prefer",
		"host=127.0.0.1 password='" + badDSNPassword + " x' dbname=db",
		"",
	} {
		for _, name := range pgxNames {
			t.Run(dsn+"/"+name, func(t *testing.T) {
				db, err := pgxleak.Open(name, dsn, pgxleak.WithLogger(nil))
				require.NoError(t, err)
				assert.Zero(t, db.Stats().OpenConnections)
				require.NoError(t, db.Close())
			})
		}
	}

	t.Run("registered config", func(t *testing.T) {
		cfg, err := pgx.ParseConfig(pgtest.NewDatabase(t))
		require.NoError(t, err)
		name := stdlib.RegisterConnConfig(cfg)
		defer stdlib.UnregisterConnConfig(name)
		db, err := pgxleak.Open("pgx", name, pgxleak.WithLogger(nil))
		require.NoError(t, err)
		defer db.Close()
		var n int
		require.NoError(t, db.QueryRow("SELECT 41 + 1").Scan(&n))
		assert.Equal(t, 42, n)
	})
}
