// Command dotless is a program of a main module whose path has no dot
// ("module myservice"), for TestDotlessModuleIsTheUsers: it holds the only
// connection of a pool in one goroutine, waits for another in a second,
// and prints what Inspect says of the holder and the waiter as JSON.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"myservice/app"

	"github.com/pgxleak/pgxleak"
)

func main() {
	db, err := pgxleak.Open("pgx", os.Args[1], pgxleak.WithMaxOpenConns(1), pgxleak.WithLogger(nil))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer db.Close()
	ins, err := app.Stuck(db)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out := struct {
		Culprit, HolderAt pgxleak.Frame
		Holder            string
		WaiterAt          []pgxleak.Frame
	}{}
	for _, c := range ins.Checkouts {
		out.Culprit = c.Culprit
		if c.Holder != nil {
			out.HolderAt, out.Holder = c.Holder.At, c.String()
		}
	}
	for _, w := range ins.Waiters {
		out.WaiterAt = append(out.WaiterAt, w.At)
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}
