package pgxleak_test

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pgxleak/pgxleak"
)

func TestOpenUnknownDriver(t *testing.T) {
	_, err := pgxleak.Open("no-such-driver", "whatever")
	if err == nil || !strings.HasPrefix(err.Error(), "pgxleak:") || !strings.Contains(err.Error(), "no-such-driver") {
		t.Fatalf("err = %v", err)
	}
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
				t.Fatal("Open succeeded")
			}
			if strings.Contains(err.Error(), pw) {
				t.Fatalf("error contains the password: %v", err)
			}
		})
	}
}

// TestOpenIdleInTransactionTimeout: the option reaches every session Open
// makes, in the startup message; OpenDB, which cannot change a connector's
// configuration, says how to set it instead.
func TestOpenIdleInTransactionTimeout(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithIdleInTransactionTimeout(1500*time.Millisecond))
	var got string
	if err := db.QueryRow("SHOW idle_in_transaction_session_timeout").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "1500ms" {
		t.Errorf("idle_in_transaction_session_timeout = %q, want 1500ms", got)
	}
	plain, _ := openTest(t)
	if err := plain.QueryRow("SHOW idle_in_transaction_session_timeout").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "0" {
		t.Errorf("by default idle_in_transaction_session_timeout = %q, want the server's 0", got)
	}
	_, err := pgxleak.OpenDB(stdlib.GetConnector(pgx.ConnConfig{}), pgxleak.WithIdleInTransactionTimeout(time.Second))
	if err == nil || !strings.Contains(err.Error(), `RuntimeParams["idle_in_transaction_session_timeout"]`) {
		t.Errorf("OpenDB with WithIdleInTransactionTimeout: %v, want an error saying how to set it", err)
	}
}
