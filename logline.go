package pgxleak

import (
	"log/slog"
	"slices"
	"strconv"
	"strings"
)

// maxLogLine bounds a default log line, as slog.Default writes it through
// the log package ("2026/12/07 04:02:14 WARN pgxleak: … pool=orders"),
// timestamp and level included: long enough for the headline and the
// attributes that matter, short enough to read in a terminal or a log
// viewer's row. The whole report stays in the Leak, the span and the
// DEBUG line.
const maxLogLine = 300

// logLinePrefix is what slog.Default writes before the message:
// "2026/12/07 04:02:14 ERROR ".
const logLinePrefix = len("2026/12/07 04:02:14 ERROR ")

// minLogPiece is the least a message or attribute is shortened to.
const minLogPiece = 40

// droppable are the attributes a log line can do without: the Leak, the
// span and the DEBUG line carry the first three; the exhaustion warning's
// headline says its duration, counts and longest wait.
var droppable = map[string]bool{"callers": true, "last_statement": true, "notes": true,
	"stalled": true, "waiting": true, "longest_wait": true, "in_use": true, "max_open": true}

// fitLine shortens the string attributes, the longest first, then drops
// the droppable ones, then shortens msg (the headline, which names the
// culprit and the verdict), so that the line they make fits in
// maxLogLine bytes. It never changes attrs' backing array.
func fitLine(msg string, attrs []slog.Attr) (string, []slog.Attr) {
	attrs = append([]slog.Attr(nil), attrs...)
	for range 2*len(attrs) + 1 {
		over := logLineSize(msg, attrs) - (maxLogLine - 1)
		if over <= 0 {
			break
		}
		at, n := -1, 0
		for i, a := range attrs {
			if k := a.Value.Kind(); (k == slog.KindString || k == slog.KindAny) && len(a.Value.String()) > n {
				at, n = i, len(a.Value.String())
			}
		}
		if n <= minLogPiece+len("…") {
			if i := slices.IndexFunc(attrs, func(a slog.Attr) bool { return droppable[a.Key] }); i >= 0 {
				attrs = slices.Delete(attrs, i, i+1)
				continue
			}
			at, n = -1, len(msg)
		}
		keep := max(n-over-len("…"), minLogPiece)
		if keep+len("…") >= n {
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
	n := logLinePrefix + len(msg)
	for _, a := range attrs {
		v := a.Value.String()
		if strings.ContainsAny(v, " =\"\\\n\t") || v == "" {
			v = strconv.Quote(v)
		}
		n += 1 + len(a.Key) + 1 + len(v)
	}
	return n
}
