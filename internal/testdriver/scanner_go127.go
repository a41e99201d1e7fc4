//go:build go1.27

package testdriver

import (
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
)

func init() {
	scannerRows = func(r *rows) driver.Rows { return scanRows{r} }
}

// scanRows is fakeRows as a driver.RowsColumnScanner, the way pgx's
// Rows is from Go 1.27 on. Its Next fails, so a test sees it if
// database/sql does not take the NextRow path. A *sql.Rows destination
// gets a cursor, which database/sql's ConvertAssign can only build from
// the ScanContext it passed in.
type scanRows struct{ *rows }

var _ driver.RowsColumnScanner = scanRows{}

func (scanRows) Next([]driver.Value) error {
	return errors.New("fake: Next called on a RowsColumnScanner")
}

func (r scanRows) NextRow() error {
	if r.done {
		return io.EOF
	}
	r.done = true
	return nil
}

func (r scanRows) ScanColumn(scanCtx driver.ScanContext, _ int, dest any) error {
	if _, ok := dest.(*sql.Rows); ok {
		return sql.ConvertAssign(scanCtx, dest, &rows{})
	}
	return sql.ConvertAssign(scanCtx, dest, int64(1))
}
