package pgxleak_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/testdriver"
)

// Open is a drop-in for sql.Open with pool defaults that suit PostgreSQL
// and leak detection on every checkout.
func ExampleOpen() {
	db, err := pgxleak.Open("pgx", os.Getenv("DATABASE_URL"),
		pgxleak.WithMaxOpenConns(20),
		pgxleak.WithMinIdleConns(4), // warm up 4 connections now, keep 4 idle
		pgxleak.WithLeakThreshold(10*time.Second),
		pgxleak.WithCapacityCheck(6), // 6 instances × 20 must fit in max_connections
	)
	if err != nil {
		log.Fatal(err)
	}
	defer pgxleak.Drain(context.Background(), db)
}

// OpenContext bounds the opening (the warm-up's connects, the capacity
// check) by a context: a server that accepts connections but never answers
// costs 5 seconds here instead of Open's 30.
func ExampleOpenContext() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	db, err := pgxleak.OpenContext(ctx, "pgx", os.Getenv("DATABASE_URL"),
		pgxleak.WithMinIdleConns(4), // connect 4 now, within ctx
	)
	if errors.Is(err, context.DeadlineExceeded) {
		log.Fatal("the database did not answer within 5s: ", err)
	}
	if err != nil {
		log.Fatal(err)
	}
	defer pgxleak.Drain(context.Background(), db)
}

// OpenDB wraps any connector; here the tests' in-memory one
// (testdriver.Connector, whose every query returns one row holding 1), so
// unit tests without a database get checkout tracking too. go-sqlmock's
// driver works the same way.
func ExampleOpenDB() {
	db, err := pgxleak.OpenDB(&testdriver.Connector{}, pgxleak.WithMaxOpenConns(2))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT 1").Scan(&n); err != nil {
		log.Fatal(err)
	}
	st, err := pgxleak.Stats(db)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("n=%d checkouts=%d returns=%d checked out=%d\n", n, st.Checkouts, st.Returns, st.CheckedOut)
	// Output: n=1 checkouts=1 returns=1 checked out=0
}

// Find is the verb behind VerifyNone: it lists connections still checked
// out, each with the function that took it.
func ExampleFind() {
	db, _ := pgxleak.OpenDB(&testdriver.Connector{}, pgxleak.WithLogger(nil))
	defer db.Close()

	conn, _ := db.Conn(context.Background()) // forgotten: never closed

	err := pgxleak.Find(db, pgxleak.WithGracePeriod(0))
	var leaks *pgxleak.LeakError
	if errors.As(err, &leaks) {
		for _, c := range leaks.Checkouts {
			fmt.Println("still out, taken by", c.Culprit.Function)
		}
	}
	conn.Close()
	fmt.Println("after Close:", pgxleak.Find(db, pgxleak.WithGracePeriod(0)))
	// Output:
	// still out, taken by github.com/pgxleak/pgxleak_test.ExampleFind
	// after Close: <nil>
}

// WithOnLeak receives every report; here a connection held past the
// threshold, then its follow-up once it comes back.
func ExampleWithOnLeak() {
	reports := make(chan pgxleak.Leak, 4)
	db, _ := pgxleak.OpenDB(&testdriver.Connector{},
		pgxleak.WithLeakThreshold(20*time.Millisecond),
		pgxleak.WithLogger(nil),
		pgxleak.WithOnLeak(func(l pgxleak.Leak) { reports <- l }),
	)
	defer db.Close()

	conn, _ := db.Conn(context.Background())
	l := <-reports
	fmt.Println(l.Kind, "culprit:", l.Culprit.Function)
	conn.Close()
	l = <-reports
	fmt.Println(l.Kind, "held at least the threshold:", l.Held >= 20*time.Millisecond)
	// Output:
	// suspected culprit: github.com/pgxleak/pgxleak_test.ExampleWithOnLeak
	// resolved held at least the threshold: true
}

// Drain stops new checkouts, waits for the ones out to come back, then
// closes the pool; what did not come back in time is listed.
func ExampleDrain() {
	db, _ := pgxleak.OpenDB(&testdriver.Connector{}, pgxleak.WithLogger(nil))

	conn, _ := db.Conn(context.Background())
	go func() {
		time.Sleep(10 * time.Millisecond) // a request finishing
		conn.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fmt.Println("drain:", pgxleak.Drain(ctx, db))
	// Output: drain: <nil>
}

// Checkouts shows what is out right now, e.g. for a debug endpoint.
func ExampleCheckouts() {
	db, _ := pgxleak.OpenDB(&testdriver.Connector{}, pgxleak.WithLogger(nil))
	defer db.Close()

	conn, _ := db.Conn(context.Background())
	defer conn.Close()
	cs, _ := pgxleak.Checkouts(db)
	for _, c := range cs {
		fmt.Println(c.Culprit.Function, c.TxStatus)
	}
	// Output: github.com/pgxleak/pgxleak_test.ExampleCheckouts idle
}

// listenForJobs takes the connection a job queue LISTENs on; a real one
// would wait there for notifications for as long as the program runs.
func listenForJobs(db *sql.DB) *sql.Conn {
	conn, err := db.Conn(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "LISTEN jobs"); err != nil {
		log.Fatal(err)
	}
	return conn
}

// WithIgnoredFunction given to Open marks the checkouts made in a function as
// held on purpose: a LISTEN connection, or a session-level advisory lock
// held for a job's lifetime, is listed but never reported as a leak, while
// an ordinary checkout held as long is.
func ExampleWithIgnoredFunction() {
	reports := make(chan pgxleak.Leak, 4)
	db, _ := pgxleak.OpenDB(&testdriver.Connector{},
		pgxleak.WithLeakThreshold(20*time.Millisecond),
		pgxleak.WithLogger(nil),
		pgxleak.WithOnLeak(func(l pgxleak.Leak) { reports <- l }),
		pgxleak.WithIgnoredFunction("github.com/pgxleak/pgxleak_test.listenForJobs"),
	)
	defer db.Close()

	listener := listenForJobs(db) // held on purpose
	defer listener.Close()
	conn, _ := db.Conn(context.Background()) // forgotten
	l := <-reports
	fmt.Println("reported:", l.Kind, "at", l.Culprit.Function)

	cs, _ := pgxleak.Checkouts(db)
	for _, c := range cs {
		fmt.Printf("listed: %s, on purpose: %q\n", c.Culprit.Function, c.OnPurpose)
	}
	conn.Close()
	fmt.Println("Find:", pgxleak.Find(db, pgxleak.WithGracePeriod(0)))
	// Output:
	// reported: suspected at github.com/pgxleak/pgxleak_test.ExampleWithIgnoredFunction
	// listed: github.com/pgxleak/pgxleak_test.listenForJobs, on purpose: "github.com/pgxleak/pgxleak_test.listenForJobs"
	// listed: github.com/pgxleak/pgxleak_test.ExampleWithIgnoredFunction, on purpose: ""
	// Find: <nil>
}
