//go:build !go1.27

package optional

import "reflect"

// rowsColumnScanner is nil: database/sql/driver declares RowsColumnScanner
// from Go 1.27 on.
var rowsColumnScanner reflect.Type
