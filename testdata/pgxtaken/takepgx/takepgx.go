// Package takepgx registers a driver of its own as "pgx" before pgx v5's
// stdlib can, as pgx v4's stdlib does in programs that link both (bun's
// test suite, for one). pgx v5 then registers only "pgx/v5".
//
// Its registration comes first by Go's package initialization order (Go
// 1.21 and later: of the packages whose imports are all initialized, the
// first by import path goes next). This package imports only packages pgx
// v5's stdlib imports too, so it is ready whenever that package is, and
// "example.com/pgxtaken/takepgx" sorts before
// "github.com/jackc/pgx/v5/stdlib". The program checks the outcome anyway.
package takepgx

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"sync"
)

// Driver is the driver registered as "pgx".
var Driver = &recorder{}

func init() { sql.Register("pgx", Driver) }

// recorder is a driver.Driver and driver.DriverContext that records the DSN
// of every Connect; its connections do nothing.
type recorder struct {
	mu       sync.Mutex
	connects []string
}

// Connects returns the DSNs Connect was called with, in order.
func (d *recorder) Connects() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.connects...)
}

func (d *recorder) Open(name string) (driver.Conn, error) {
	return connector{d, name}.Connect(context.Background())
}

func (d *recorder) OpenConnector(name string) (driver.Connector, error) {
	return connector{d, name}, nil
}

type connector struct {
	d   *recorder
	dsn string
}

func (c connector) Connect(context.Context) (driver.Conn, error) {
	c.d.mu.Lock()
	c.d.connects = append(c.d.connects, c.dsn)
	c.d.mu.Unlock()
	return conn{}, nil
}

func (c connector) Driver() driver.Driver { return c.d }

type conn struct{}

func (conn) Prepare(string) (driver.Stmt, error) { return nil, errors.New("takepgx: no statements") }
func (conn) Close() error                        { return nil }
func (conn) Begin() (driver.Tx, error)           { return nil, errors.New("takepgx: no transactions") }
