// Command pgxtaken opens pgxleak.Open("pgx", dsn) in a program where another
// driver holds the name "pgx" (see package takepgx), and prints what it saw
// as JSON for TestOpenPgxNameTakenByAnotherDriver.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"os"

	"example.com/pgxtaken/takepgx"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pgxleak/pgxleak"
)

type result struct {
	PgxHolder      string   // "takepgx" or "pgx v5": what sql.Open("pgx") uses
	OpenErr        string   // pgxleak.Open("pgx", dsn)
	PingErr        string   // a first connection through it
	Connects       []string // the DSNs takepgx's Connect was called with
	Checkouts      uint64   // pgxleak's count for the pool
	V5ParseErr     string   // pgxleak.Open("pgx/v5", dsn): pgx v5 parses dsn
	V5ParseErrIsPg bool     // ... and errors.As finds *pgconn.ParseConfigError
}

func main() {
	// Neither pgx v5 nor pgxleak can parse this; takepgx takes anything.
	dsn := os.Args[1]
	var r result
	probe, err := sql.Open("pgx", dsn)
	if err != nil {
		panic(err)
	}
	switch probe.Driver() {
	case takepgx.Driver:
		r.PgxHolder = "takepgx"
	case stdlib.GetDefaultDriver():
		r.PgxHolder = "pgx v5"
	}
	_ = probe.Close()

	db, err := pgxleak.Open("pgx", dsn, pgxleak.WithLogger(nil))
	if err != nil {
		r.OpenErr = err.Error()
	} else {
		if err := db.PingContext(context.Background()); err != nil {
			r.PingErr = err.Error()
		}
		r.Connects = takepgx.Driver.Connects()
		st, err := pgxleak.Stats(db)
		if err != nil {
			panic(err) // the pool is not pgxleak's
		}
		r.Checkouts = st.Checkouts
		_ = db.Close()
	}

	if db, err := pgxleak.Open("pgx/v5", dsn, pgxleak.WithLogger(nil)); err != nil {
		r.V5ParseErr = err.Error()
		var pe *pgconn.ParseConfigError
		r.V5ParseErrIsPg = errors.As(err, &pe)
	} else {
		_ = db.Close()
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		panic(err)
	}
}
