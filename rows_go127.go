//go:build go1.27

package pgxleak

import "database/sql/driver"

// rowsColumnScanner is the narrow interface of driver.RowsColumnScanner
// (Go 1.27), whose methods need no interception: database/sql calls
// NextRow instead of Next and ScanColumn instead of its own conversion, and
// both pass straight to the wrapped Rows, as Next does. The Rows ends the
// same way on either path: at io.EOF, at an error, or at Close, database/sql
// calls the wrapper's Close, which does the bookkeeping (see rows.Close).
type rowsColumnScanner interface {
	NextRow() error
	ScanColumn(scanCtx driver.ScanContext, index int, dest any) error
}
