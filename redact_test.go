package pgxleak_test

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/testdriver"
)

func TestDSNSecrets(t *testing.T) {
	for _, tc := range []struct{ dsn, want string }{
		{"postgres://app:s3cret@h/db", "s3cret"},
		{"postgres://app:s%40cret@h/db", "s@cret"},
		{"postgres://app:sec:ret@h/db", "sec:ret"},
		{"postgres://app:se@cret@h/db?sslmode=bogus", "se@cret"},
		{"POSTGRES://app:s3cret@h/db", "s3cret"},
		{"postgres://app@h/db?password=s3cret&sslmode=disable", "s3cret"},
		{"postgres://app@h/db?pass%77ord=s3cret", "s3cret"},
		{"postgres://app@h/db?sslpassword=s3cret", "s3cret"},
		{"host=h password=s3cret", "s3cret"},
		{"host=h password = s3cret sslmode=bogus", "s3cret"},
		{"host=h PASSWORD=s3cret", "s3cret"},
		{"host=h password='s3 cret'", "s3 cret"},
		{`host=h password='s3\'cret'`, "s3'cret"},
		{"host=h password='s3cret", "s3cret"},
	} {
		assert.Contains(t, pgxleak.DSNSecrets(tc.dsn), tc.want, "DSNSecrets(%q)", tc.dsn)
	}
	assert.Empty(t, pgxleak.DSNSecrets("host=h user=app dbname=db"), "a DSN without a password yields secrets")
}

func TestRedactError(t *testing.T) {
	// Untouched when the text has no secret: the same value, so type
	// assertions work.
	pgErr := &pgconn.PgError{Code: "28P01", Message: "password authentication failed"}
	assert.Same(t, pgErr, pgxleak.RedactError(pgErr, []string{"s3cret"}), "RedactError changed an error without the secret")
	// An empty secret (a DSN without a password) masks nothing: the same
	// value, not a text grown by masking every position.
	refused := errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
	assert.Same(t, refused, pgxleak.RedactError(refused, []string{""}), "RedactError with an empty secret")
	assert.Same(t, refused, pgxleak.RedactError(refused, []string{"", "s3cret"}), "RedactError with an empty and an absent secret")
	// Masked, and still the original underneath.
	wrapped := fmt.Errorf("connecting with s3cret: %w", driver.ErrBadConn)
	err := pgxleak.RedactError(wrapped, []string{"s3cret"})
	assert.NotContains(t, err.Error(), "s3cret")
	assert.Contains(t, err.Error(), "xxxxx", "the secret is masked")
	assert.ErrorIs(t, err, driver.ErrBadConn, "the redacted error lost its chain")
	assert.ErrorIs(t, err, wrapped, "the redacted error lost its chain")
	withPg := fmt.Errorf("s3cret: %w", pgErr)
	var pe *pgconn.PgError
	if assert.ErrorAs(t, pgxleak.RedactError(withPg, []string{"s3cret"}), &pe, "errors.As cannot reach the PgError behind a redacted error") {
		assert.Equal(t, "28P01", pe.Code)
	}
	// A mask can complete a secret ending in its own letter; all-x secrets
	// need another mask.
	for _, tc := range []struct{ secret, text string }{
		{"xb", "xbb"},
		{"xb", "xxbxbbb"},
		{"x", "xxx"},
		{"xxxxxxx", "xxxxxxxxxxxxxxx"},
		{"xxxxx", "a xxxxx b"},
	} {
		err := pgxleak.RedactError(errors.New(tc.text), []string{tc.secret})
		assert.NotContains(t, err.Error(), tc.secret, "RedactError(%q, %q)", tc.text, tc.secret)
	}
	assert.NoError(t, pgxleak.RedactError(nil, []string{"x"}), "RedactError(nil)")
}

func TestConnectorSecrets(t *testing.T) {
	cfg, err := pgx.ParseConfig("postgres://app:s3cret@127.0.0.1:1/db")
	require.NoError(t, err)
	assert.Contains(t, pgxleak.ConnectorSecrets(stdlib.GetConnector(*cfg)), "s3cret")
	cfg.Password = "changed-after-parse"
	got := pgxleak.ConnectorSecrets(stdlib.GetConnector(*cfg))
	assert.Contains(t, got, "changed-after-parse", "the set password")
	assert.Contains(t, got, "s3cret", "the parsed password")
	assert.Nil(t, pgxleak.ConnectorSecrets(&testdriver.Connector{}), "ConnectorSecrets of a non-pgx connector")
}

// FuzzRedactDSN builds DSNs in every form pgx reads with an arbitrary
// password, and checks that the parse error (pgx's, its redaction being
// best effort) never carries the password once pgxleak has masked it, and
// that the pool name derived from the DSN never does either.
func FuzzRedactDSN(f *testing.F) {
	f.Add("s3cret-pass", 0, "sslmode=bogus")
	f.Add("s3cret-pass", 1, "sslmode=bogus")
	f.Add("sec:ret@/x", 2, "port=notaport")
	f.Add("s3 cret'pass", 3, "sslmode=bogus")
	f.Add("s3cret-pass", 4, "")
	f.Add("xxxxxxxx", 5, "x=y")
	f.Add(`b\a'ck"sla sh`, 6, "connect_timeout=abc")
	f.Fuzz(func(t *testing.T, pw string, form int, extra string) {
		if len(pw) < 4 || strings.ContainsAny(pw, "\x00") {
			t.Skip()
		}
		// Parameters that make pgx read files are not what this is about.
		for _, p := range []string{"passfile", "service", "sslcert", "sslkey", "sslrootcert", "sslcrl"} {
			if strings.Contains(strings.ToLower(pw+extra), p) {
				t.Skip()
			}
		}
		var dsn string
		switch uint(form) % 7 {
		case 0: // URL with the password encoded
			dsn = (&url.URL{Scheme: "postgres", User: url.UserPassword("app", pw), Host: "127.0.0.1:1", Path: "/db"}).String() + "?" + extra
		case 1: // URL with the password as it is
			dsn = "postgres://app:" + pw + "@127.0.0.1:1/db?" + extra
		case 2: // URL with the password as a query parameter
			dsn = "postgres://app@127.0.0.1:1/db?password=" + url.QueryEscape(pw) + "&" + extra
		case 3: // keyword/value, quoted
			dsn = "host=127.0.0.1 port=1 user=app password='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(pw) + "' " + extra
		case 4: // keyword/value, as it is
			dsn = "host=127.0.0.1 port=1 user=app password=" + pw + " " + extra
		case 5: // keyword/value with spaces around "="
			dsn = "host=127.0.0.1 port=1 user=app password = " + pw + " " + extra
		default: // a mistyped scheme: not a URL to pgx
			dsn = "POSTGRES://app:" + pw + "@127.0.0.1:1/db?" + extra
		}
		// Only a password pgx would actually read is the user's secret:
		// the one it parses, or the one a tolerant reading finds when it
		// cannot parse. Ignore inputs where the password also makes up
		// the rest of the DSN or the messages.
		secrets := pgxleak.DSNSecrets(dsn)
		isSecret := false
		for _, s := range secrets {
			isSecret = isSecret || s == pw
		}
		if !isSecret || strings.Contains(strings.Replace(dsn, pw, "", 1), pw) {
			return
		}
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			require.NotContains(t, pgxleak.RedactError(err, secrets).Error(), pw, "DSN %q: the error contains the password", dsn)
			return
		}
		if !strings.Contains(cfg.Host+fmt.Sprint(cfg.Port)+cfg.Database, pw) {
			require.NotContains(t, pgxleak.PoolName(dsn), pw, "the pool name contains the password")
		}
	})
}
