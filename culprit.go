package pgxleak

import (
	"strings"

	"github.com/pgxleak/pgxleak/internal/stack"
)

// The culprit policy: which frame of a checkout's stack a report names.
// It is the first frame that belongs to the user's code rather than to the
// runtime, database/sql, a driver or a known database wrapper.

// libraryPrefixes are the function-name prefixes of code that is never the
// culprit: the runtime, database/sql, drivers, pgxleak itself and the
// well-known wrappers over database/sql.
var libraryPrefixes = []string{
	"runtime.",
	"database/sql.",
	"database/sql/driver.",
	"context.",
	"sync.",
	"reflect.",
	"github.com/pgxleak/pgxleak.",
	"github.com/pgxleak/pgxleak/internal/",
	"github.com/jackc/", // pgx, pgconn, pgtype, puddle
	"github.com/lib/pq.",
	"github.com/DATA-DOG/go-sqlmock.",
	"github.com/jmoiron/sqlx.",
	"gorm.io/",
	"entgo.io/ent",
	"github.com/uptrace/bun",
	"github.com/uptrace/opentelemetry-go-extra/otelsql",
	"github.com/XSAM/otelsql",
	"github.com/ngrok/sqlmw",
	"github.com/luna-duclos/instrumentedsql",
	"github.com/pressly/goose",
	"github.com/Masterminds/squirrel",
	"github.com/doug-martin/goqu",
	"github.com/volatiletech/sqlboiler",
	"github.com/go-jet/jet",
	"github.com/stephenafamo/bob",
}

// isLibrary reports whether fn belongs to code that is never the culprit,
// checking libraryPrefixes and then extra.
func isLibrary(fn string, extra []string) bool {
	for _, p := range libraryPrefixes {
		if strings.HasPrefix(fn, p) {
			return true
		}
	}
	for _, p := range extra {
		if p != "" && strings.HasPrefix(fn, p) {
			return true
		}
	}
	return false
}

// culpritIndex returns the index in frames of the first frame outside the
// libraries (see isLibrary), or -1 when every frame is library code.
func culpritIndex(frames []stack.Frame, extra []string) int {
	for i, f := range frames {
		if !isLibrary(f.Function, extra) {
			return i
		}
	}
	return -1
}
