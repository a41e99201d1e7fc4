// Command dotless is a program of a main module whose path has no dot
// ("module myservice"), for TestDotlessModuleIsTheUsers: it holds the only
// connection of a pool in one goroutine, waits for another in a second,
// and prints what Inspect says of the holder and the waiter as JSON. Its
// test (app/app_test.go) does the same in a test binary.
package main

import (
	"fmt"
	"os"

	"myservice/app"

	"github.com/pgxleak/pgxleak"
)

func main() {
	db, err := pgxleak.Open("pgx", os.Getenv("DOTLESS_DSN"), pgxleak.WithMaxOpenConns(1), pgxleak.WithLogger(nil))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer db.Close()
	out, err := app.Report(db)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}
