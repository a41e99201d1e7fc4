package pgxleak_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/oteltest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

func relRandHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// relSignals captures everything a pool emits.
type relSignals struct {
	logs  lockedBuffer
	leaks *leaktest.Recorder
	spans *tracetest.SpanRecorder
	tp    *sdktrace.TracerProvider
	mp    metric.MeterProvider
	sdk   *oteltest.SDK

	mu    sync.Mutex
	extra []string // errors, Checkouts and LeakErrors, rendered
}

func newRelSignals(t *testing.T) *relSignals {
	sdk := oteltest.New() // the SDK set up out of line: see internal/oteltest
	s := &relSignals{leaks: &leaktest.Recorder{}, spans: sdk.Spans, tp: sdk.TP, mp: sdk.MP, sdk: sdk}
	t.Cleanup(func() { sdk.Shutdown(context.Background()) })
	return s
}

// logger logs at DEBUG, as text and as JSON.
func (s *relSignals) logger() *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelDebug, AddSource: true}
	return slog.New(newMultiHandler(slog.NewTextHandler(&s.logs, opts), slog.NewJSONHandler(&s.logs, opts)))
}

func (s *relSignals) options() []pgxleak.Option {
	return []pgxleak.Option{
		pgxleak.WithLogger(s.logger()),
		s.leaks.Option(),
		pgxleak.WithTracerProvider(s.tp),
		pgxleak.WithMeterProvider(s.mp),
	}
}

// addErr records an error as a logger would print it.
func (s *relSignals) addErr(err error) {
	if err == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.extra = append(s.extra, err.Error(), fmt.Sprintf("%v", err), fmt.Sprintf("%+v", err), fmt.Sprintf("%q", err))
}

func (s *relSignals) addCheckouts(cs []pgxleak.Checkout) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range cs {
		s.extra = append(s.extra, fmt.Sprintf("%+v", c), c.String(), stackString(c.Stack))
	}
}

// dump renders every signal captured so far as text.
func (s *relSignals) dump(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("== logs\n")
	b.WriteString(s.logs.String())
	b.WriteString("== leak reports\n")
	for _, l := range s.leaks.All() {
		fmt.Fprintf(&b, "%s\n%+v\n%s\n", l, l, stackString(l.Stack))
	}
	b.WriteString("== spans\n")
	var spans []sdktrace.ReadOnlySpan
	for _, sp := range s.spans.Started() {
		spans = append(spans, sp)
	}
	spans = append(spans, s.spans.Ended()...)
	for _, sp := range spans {
		fmt.Fprintf(&b, "span %q status %v %q\n", sp.Name(), sp.Status().Code, sp.Status().Description)
		for _, a := range sp.Attributes() {
			fmt.Fprintf(&b, "  %s=%s\n", a.Key, a.Value.String())
		}
		for _, e := range sp.Events() {
			fmt.Fprintf(&b, "  event %q\n", e.Name)
			for _, a := range e.Attributes {
				fmt.Fprintf(&b, "    %s=%s\n", a.Key, a.Value.String())
			}
		}
		for _, l := range sp.Links() {
			for _, a := range l.Attributes {
				fmt.Fprintf(&b, "  link %s=%s\n", a.Key, a.Value.String())
			}
		}
		for _, a := range sp.Resource().Attributes() {
			fmt.Fprintf(&b, "  resource %s=%s\n", a.Key, a.Value.String())
		}
	}
	b.WriteString("== metrics\n")
	rm, err := s.sdk.ResourceMetrics(context.Background())
	require.NoError(t, err, "collecting metrics")
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			fmt.Fprintf(&b, "metric %s %q %s\n", m.Name, m.Description, m.Unit)
			for _, set := range relDataPointAttrs(m.Data) {
				fmt.Fprintf(&b, "  %s\n", set)
			}
			fmt.Fprintf(&b, "  %+v\n", m.Data)
		}
	}
	b.WriteString("== errors, checkouts, LeakErrors\n")
	s.mu.Lock()
	b.WriteString(strings.Join(s.extra, "\n"))
	s.mu.Unlock()
	return b.String()
}

// relDataPointAttrs returns the encoded attribute sets of every data point.
func relDataPointAttrs(data metricdata.Aggregation) []string {
	var out []string
	add := func(enc string) { out = append(out, enc) }
	switch d := data.(type) {
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			add(p.Attributes.Encoded(nil))
		}
	case metricdata.Gauge[float64]:
		for _, p := range d.DataPoints {
			add(p.Attributes.Encoded(nil))
		}
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			add(p.Attributes.Encoded(nil))
		}
	case metricdata.Sum[float64]:
		for _, p := range d.DataPoints {
			add(p.Attributes.Encoded(nil))
		}
	case metricdata.Histogram[int64]:
		for _, p := range d.DataPoints {
			add(p.Attributes.Encoded(nil))
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			add(p.Attributes.Encoded(nil))
		}
	default:
		add(fmt.Sprintf("%+v", d))
	}
	return out
}

// relAbsent fails t if any of secrets appears in text, showing where.
func relAbsent(t *testing.T, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		if i := strings.Index(text, s); i >= 0 {
			lo, hi := max(0, i-300), min(len(text), i+len(s)+100)
			assert.Failf(t, "a secret in the signals", "%s contains %q:\n...%s...", what, s, text[lo:hi])
		}
	}
}

// relPasswordForms returns the spellings of pw an emitted text could carry:
// raw, URL-encoded both ways, and its random core alone (which catches a
// partial leak).
func relPasswordForms(pw, core string) []string {
	return []string{pw, url.PathEscape(pw), url.QueryEscape(pw), strings.TrimPrefix(url.UserPassword("", pw).String(), ":"), core}
}

// relScramCluster starts a private cluster where role app must log in over
// TCP with scram-sha-256, and returns it with the role's password.
func relScramCluster(t *testing.T) (cl *pgtest.Cluster, pw, core string) {
	t.Helper()
	cl = pgtest.NewCluster(t, pgtest.Setting("password_encryption", "scram-sha-256"))
	core = relRandHex(8)
	pw = "Pw7:" + core + "/@x"
	admin := relAdmin(t, cl)
	ctx := t.Context()
	for _, q := range []string{
		"CREATE ROLE app LOGIN PASSWORD '" + pw + "'",
		"CREATE DATABASE appdb OWNER app",
	} {
		_, err := admin.Exec(ctx, q)
		require.NoError(t, err, q)
	}
	var scram bool
	require.NoError(t, admin.QueryRow(ctx, "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'app'").Scan(&scram))
	require.True(t, scram, "app's password is not stored as a SCRAM verifier")
	require.NoError(t, cl.RequirePassword())
	// The role really needs its password now.
	for _, bad := range []string{"", "wrong-" + relRandHex(4)} {
		u := url.URL{Scheme: "postgres", User: url.UserPassword("app", bad), Host: fmt.Sprintf("127.0.0.1:%d", cl.Port()), Path: "/appdb", RawQuery: "sslmode=disable"}
		c, err := pgx.Connect(ctx, u.String())
		if err == nil {
			_ = c.Close(ctx)
		}
		require.Error(t, err, "app connected with password %q: pg_hba does not require scram", bad)
	}
	return cl, pw, core
}

func relAppURL(port int, pw, db string, query string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword("app", pw), Host: fmt.Sprintf("127.0.0.1:%d", port), Path: "/" + db, RawQuery: query}
	return u.String()
}

func relAppKV(port int, pw, db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=app password='%s' dbname=%s sslmode=disable", port, pw, db)
}
