package pgxleak_test

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
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
