package pgxleak

import (
	"context"
	"database/sql/driver"
	"reflect"
)

// Narrow interfaces for the optional methods that need no interception:
// the wrappers embed the wrapped value under these, so the methods are
// promoted straight from it.
type (
	columnConverter interface {
		ColumnConverter(idx int) driver.ValueConverter
	}
	rowsNextResultSet interface {
		HasNextResultSet() bool
		NextResultSet() error
	}
	rowsColumnTypeScanType interface {
		ColumnTypeScanType(index int) reflect.Type
	}
	rowsColumnTypeDatabaseTypeName interface {
		ColumnTypeDatabaseTypeName(index int) string
	}
	rowsColumnTypeLength interface {
		ColumnTypeLength(index int) (length int64, ok bool)
	}
	rowsColumnTypeNullable interface {
		ColumnTypeNullable(index int) (nullable, ok bool)
	}
	rowsColumnTypePrecisionScale interface {
		ColumnTypePrecisionScale(index int) (precision, scale int64, ok bool)
	}
)

// wrapRows wraps r. Rows read on a context that can never be cancelled are
// watched for garbage collection: if database/sql's *sql.Rows is dropped
// without Close, the connection can never come back, and that is reported.
func (c *conn) wrapRows(ctx context.Context, r driver.Rows) driver.Rows {
	if t := reflect.TypeOf(r); t != c.rowsType {
		c.rowsType, c.rowsWrap = t, rowsWrappers[rowsMask(r)]
	}
	w, rw := c.rowsWrap(rows{inner: r, c: c})
	if _, unknown := ctx.(noContext); !unknown && ctx.Done() == nil && c.pool.cfg.gcDetection {
		rw.watch = c.lendWatch() // see gcWatch
	}
	return w
}

// rows wraps a driver.Rows; the wrappers in wrap_gen.go embed it by value,
// so wrapping costs one allocation.
type rows struct {
	inner driver.Rows
	c     *conn
	watch *gcWatch // held while the Rows is open, if watched (see gcWatch)
}

func (r *rows) Columns() []string { return r.inner.Columns() }

func (r *rows) Next(dest []driver.Value) error { return r.inner.Next(dest) }

func (r *rows) Close() error {
	if w := r.watch; w != nil {
		r.watch = nil
		r.c.returnWatch(w)
	}
	err := r.inner.Close()
	r.c.afterStatement()
	return err
}
