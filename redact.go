package pgxleak

import (
	"database/sql/driver"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// redactMask replaces a secret in error text; it is pgx's own mask.
const redactMask = "xxxxx"

// kvPassword finds password (and sslpassword) values in a keyword/value DSN,
// with the spaces around "=" that libpq allows and in any letter case, since
// a misspelt keyword is still the user's secret.
var kvPassword = regexp.MustCompile(`(?i)password\s*=\s*('(?:[^'\\]|\\.)*'?|[^\s]+)`)

// dsnSecrets returns the passwords a DSN carries, in every spelling an error
// message might quote them: the value pgx parses, and, because a DSN that
// does not parse is quoted back by the driver with only best-effort
// redaction, whatever a tolerant scan finds in URL user info, password query
// parameters and password keywords, raw and decoded. Longest first.
func dsnSecrets(dsn string, parsed *pgx.ConnConfig) []string {
	var out []string
	add := func(s string) {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
		if d, err := url.PathUnescape(s); err == nil && d != s && d != "" && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	if parsed != nil {
		add(parsed.Password)
	}
	if i := strings.Index(dsn, "://"); i >= 0 {
		rest := dsn[i+3:]
		// User info ends at the last '@': a password may contain '@', '/'
		// or ':' when the URL is malformed.
		if at := strings.LastIndexByte(rest, '@'); at >= 0 {
			if colon := strings.IndexByte(rest[:at], ':'); colon >= 0 {
				add(rest[colon+1 : at])
			}
		}
		if q := strings.IndexByte(rest, '?'); q >= 0 {
			for _, kv := range strings.FieldsFunc(rest[q+1:], func(r rune) bool { return r == '&' || r == ';' }) {
				k, v, _ := strings.Cut(kv, "=")
				if dk, err := url.QueryUnescape(k); err == nil {
					k = dk
				}
				if strings.Contains(strings.ToLower(k), "password") {
					add(v)
					if dv, err := url.QueryUnescape(v); err == nil {
						add(dv)
					}
				}
			}
		}
	}
	for _, m := range kvPassword.FindAllStringSubmatch(dsn, -1) {
		v := m[1]
		add(v)
		if amp, _, ok := strings.Cut(v, "&"); ok { // a URL query value
			add(amp)
		}
		if strings.HasPrefix(v, "'") {
			inner := strings.TrimSuffix(strings.TrimPrefix(v, "'"), "'")
			add(inner)
			add(strings.NewReplacer(`\'`, `'`, `\\`, `\`).Replace(inner))
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// redactError returns err itself unless its text contains one of secrets.
// Then it returns an error whose text has each secret masked and which
// unwraps to err, so errors.Is and errors.As (driver.ErrBadConn,
// *pgconn.PgError) still see the original.
func redactError(err error, secrets []string) error {
	secrets = slices.DeleteFunc(slices.Clone(secrets), func(s string) bool { return s == "" })
	if err == nil || len(secrets) == 0 {
		return err
	}
	msg := err.Error()
	if !containsAny(msg, secrets) {
		return err
	}
	// A mask can complete a secret that ends in its letter ("xb" in "xbb"),
	// so repeat until nothing is left; give up on the text if that fails.
	red := msg
	for range 8 {
		for _, s := range secrets {
			mask := redactMask
			if strings.Trim(s, "x") == "" {
				mask = "*****"
			}
			red = strings.ReplaceAll(red, s, mask)
		}
		if !containsAny(red, secrets) {
			return &redactedError{msg: red, err: err}
		}
	}
	return &redactedError{msg: "pgxleak: connection error (its text quoted the DSN's password and was withheld)", err: err}
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// redactedError is an error whose text had the DSN's password masked.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }

func (e *redactedError) Unwrap() error { return e.err }

// connectorSecrets returns the passwords of a connector made by pgx's
// stdlib.GetConnector, which keeps its pgx.ConnConfig in an exported
// embedded field: the configured password and whatever the connection
// string it was parsed from carries. Other connectors yield none.
func connectorSecrets(c driver.Connector) []string {
	v := reflect.ValueOf(c)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return nil
	}
	f := v.FieldByName("ConnConfig")
	if !f.IsValid() || !f.CanInterface() {
		return nil
	}
	var cfg pgx.ConnConfig
	switch x := f.Interface().(type) {
	case pgx.ConnConfig:
		cfg = x
	case *pgx.ConnConfig:
		if x == nil {
			return nil
		}
		cfg = *x
	default:
		return nil
	}
	out := dsnSecrets(cfg.ConnString(), parseOrNil(cfg.ConnString()))
	if cfg.Password != "" && !slices.Contains(out, cfg.Password) {
		out = append(out, cfg.Password)
		slices.SortStableFunc(out, func(a, b string) int { return len(b) - len(a) })
	}
	return out
}

// parseOrNil parses dsn with pgx, or returns nil.
func parseOrNil(dsn string) *pgx.ConnConfig {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil
	}
	return cfg
}
