//go:build go1.27

package pgxleak

import "database/sql/driver"

// fullRows also implements driver.RowsColumnScanner from Go 1.27 on.
func (fullRows) NextRow() error                                { return nil }
func (fullRows) ScanColumn(driver.ScanContext, int, any) error { return nil }
