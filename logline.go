package pgxleak

import (
	"log/slog"
	"strconv"
	"strings"
)

// maxLogLine bounds a default log line as slog's text handler writes it,
// timestamp and level included: long enough for the headline and the
// attributes that matter, short enough to read in a terminal or a log
// viewer's row. The whole report stays in the Leak, the span and the
// DEBUG line.
const maxLogLine = 300

// logLinePrefix is what the text handler writes around the message:
// "time=2026-12-07T04:02:14.188+01:00 level=ERROR msg=" and its quotes.
const logLinePrefix = 56

// minLogPiece is the least a message or attribute is shortened to.
const minLogPiece = 40

// fitLine shortens msg and the string attributes, the longest first, so
// that the line they make fits in maxLogLine bytes. It never changes
// attrs' backing array.
func fitLine(msg string, attrs []slog.Attr) (string, []slog.Attr) {
	attrs = append([]slog.Attr(nil), attrs...)
	for range len(attrs) + 1 {
		over := logLineSize(msg, attrs) - maxLogLine
		if over <= 0 {
			break
		}
		at, n := -1, len(msg)
		for i, a := range attrs {
			if k := a.Value.Kind(); (k == slog.KindString || k == slog.KindAny) && len(a.Value.String()) > n {
				at, n = i, len(a.Value.String())
			}
		}
		keep := max(n-over-len("…"), minLogPiece)
		if keep >= n {
			break
		}
		if at < 0 {
			msg = shorten(msg, keep)
		} else {
			attrs[at] = slog.String(attrs[at].Key, shorten(attrs[at].Value.String(), keep))
		}
	}
	return msg, attrs
}

// logLineSize is about the length of the text handler's line: it quotes
// values that need it.
func logLineSize(msg string, attrs []slog.Attr) int {
	n := logLinePrefix + len(strconv.Quote(msg)) - 2
	for _, a := range attrs {
		v := a.Value.String()
		if strings.ContainsAny(v, " =\"\\\n\t") || v == "" {
			v = strconv.Quote(v)
		}
		n += 1 + len(a.Key) + 1 + len(v)
	}
	return n
}
