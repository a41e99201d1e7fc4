//go:build go1.27

package optional

import (
	"database/sql/driver"
	"reflect"
)

// rowsColumnScanner is driver.RowsColumnScanner, added in Go 1.27.
var rowsColumnScanner = reflect.TypeFor[driver.RowsColumnScanner]()
