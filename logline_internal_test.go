package pgxleak

import (
	"bytes"
	"context"
	"errors"
	"log"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestFitLine: a line slog's text handler writes from fitLine's message and
// attributes stays under maxLogLine bytes, and a short one is unchanged.
func TestFitLine(t *testing.T) {
	long := strings.Repeat("held at app/handler.go:42 (app.getUser) ", 20)
	pool := slog.String("pool", "127.0.0.1:5432/pgxleak_54c4fcf48fa3")
	for _, tc := range []struct {
		name  string
		msg   string
		attrs []slog.Attr
		same  bool
	}{
		{"short", "pgxleak: a short line", []slog.Attr{pool, slog.Int("count", 2)}, true},
		{"long message", "pgxleak: " + long, []slog.Attr{pool, slog.Duration("held", time.Second)}, false},
		{"long attribute", "pgxleak: a leak", []slog.Attr{pool, slog.String("callers", long)}, false},
		{"long error", "pgxleak: capacity check failed", []slog.Attr{pool, slog.Any("error", errors.New(long+`"quoted"`))}, false},
		{"everything long", "pgxleak: " + long, []slog.Attr{pool, slog.String("last_statement", "SELECT "+long), slog.String("callers", long), slog.String("notes", long)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := append([]slog.Attr(nil), tc.attrs...)
			msg, attrs := fitLine(tc.msg, tc.attrs)
			assert.Equal(t, before, tc.attrs, "the caller's attributes are untouched")
			var buf bytes.Buffer // as slog.Default writes it
			defer log.SetOutput(log.Writer())
			log.SetOutput(&buf)
			slog.Default().LogAttrs(context.Background(), slog.LevelError, msg, attrs...)
			line := strings.TrimSuffix(buf.String(), "\n")
			assert.Less(t, len(line), maxLogLine, line)
			assert.Contains(t, line, "pool=127.0.0.1:5432/pgxleak_54c4fcf48fa3", "short attributes are kept whole")
			if tc.same {
				assert.Equal(t, tc.msg, msg)
				assert.Equal(t, tc.attrs, attrs)
			}
		})
	}
}
