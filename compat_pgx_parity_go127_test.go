//go:build go1.27

package pgxleak_test

import (
	"database/sql"
	"testing"
	"time"
	"uuid"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Go 1.27's database/sql scans into and converts uuid.UUID.
func init() {
	u := uuid.MustParse("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
	newerScanCases = append(newerScanCases,
		scanCase{name: "uuid.UUID from uuid", query: "SELECT 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid", dests: into[uuid.UUID]()},
		scanCase{name: "uuid.UUID from text", query: "SELECT 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::text", dests: into[uuid.UUID]()},
		scanCase{name: "uuid.UUID from text that is no uuid", query: "SELECT 'nope'::text", dests: into[uuid.UUID]()},
		scanCase{name: "uuid.UUID from 16 bytes of bytea", query: `SELECT '\xa0eebc999c0b4ef8bb6d6bb9bd380a11'::bytea`, dests: into[uuid.UUID]()},
		scanCase{name: "uuid.UUID from NULL", query: "SELECT NULL::uuid", dests: into[uuid.UUID]()},
		scanCase{name: "sql.Null[uuid.UUID] from uuid", query: "SELECT 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid", dests: into[sql.Null[uuid.UUID]]()},
		scanCase{name: "uuid.UUID as a uuid argument", query: "SELECT $1::uuid::text", args: []any{u}, dests: into[string]()},
		scanCase{name: "uuid.UUID as a text argument", query: "SELECT $1::text", args: []any{u}, dests: into[string]()},
	)
}

// TestPgxScanNilDestinationDoesNotHang: on Go 1.27, a nil destination
// gets pgx's error through Row.Scan, through pgxleak as through pgx.
// database/sql's own conversion, which pgxleak used while it hid pgx's
// driver.RowsColumnScanner, panics on a nil sql.Scanner (or a nil *string
// given a number) while it holds the Rows' close lock, and Row.Scan's
// deferred Close then waits forever: a hang fails the test at a deadline
// instead of wedging the run.
func TestPgxScanNilDestinationDoesNotHang(t *testing.T) {
	t.Parallel()
	plain, leak, _ := compatPair(t)
	for _, dest := range []any{(*sql.NullString)(nil), (*string)(nil), (*any)(nil)} {
		for _, query := range []string{"SELECT 42::int4", "SELECT NULL::int4"} {
			var errs [2]error
			for i, db := range []*sql.DB{plain, leak} {
				done := make(chan error, 1)
				go func() { done <- db.QueryRowContext(t.Context(), query).Scan(dest) }()
				select {
				case errs[i] = <-done:
				case <-time.After(10 * time.Second):
					require.Failf(t, "Row.Scan hangs", "%s: Row.Scan(%T(nil)) of %q", []string{"pgx", "pgxleak"}[i], dest, query)
				}
			}
			require.ErrorContains(t, errs[0], "destination pointer is nil", "pgx, %T, %s", dest, query)
			assert.Equal(t, describeErr(errs[0]), describeErr(errs[1]), "%T, %s", dest, query)
		}
	}
}
