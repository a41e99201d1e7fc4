package pgxleak

import "database/sql/driver"

// newTx wraps t, begun on c. It is a function, not a method of conn: every
// method of conn is promoted into each generated wrapper, and costs
// compile time there.
func newTx(c *conn, t driver.Tx) driver.Tx {
	c.setTxStatus(txInTransaction)
	return &tx{inner: t, c: c}
}

// tx wraps a driver.Tx. Commit and Rollback do not return the connection;
// database/sql does that afterwards, through IsValid or Close.
type tx struct {
	inner driver.Tx
	c     *conn
}

func (t *tx) Commit() error {
	err := t.inner.Commit()
	t.c.afterTx(err)
	return err
}

func (t *tx) Rollback() error {
	err := t.inner.Rollback()
	t.c.afterTx(err)
	return err
}
