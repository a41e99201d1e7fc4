package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgxleak/pgxleak/internal/pgtest/cluster"
)

// localAddrEnv moves the local server the demo tries from 127.0.0.1:5432 to
// another host:port. Pointed at a closed port, it shows what the demo does
// on a machine where PostgreSQL is not running.
const localAddrEnv = "PGXLEAK_LOCAL_ADDR"

// throwaway is the cluster the demo started, if any.
var throwaway struct {
	mu      sync.Mutex // held while the cluster starts, so that Ctrl-C removes it once started
	cluster *cluster.Cluster
}

// database returns the DSN to use, and whether it came from DATABASE_URL:
// DATABASE_URL if set; else the local server (user postgres, database
// test) if it takes a connection; else a throwaway cluster started from the
// local PostgreSQL binaries, which it says in one line and which
// removeCluster removes (exit calls it, and so does Ctrl-C).
func database() (dsn string, fromEnv bool) {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u, true
	}
	addr := "127.0.0.1:5432"
	if a := os.Getenv(localAddrEnv); a != "" {
		addr = a
	}
	local := "postgres://postgres@" + addr + "/test?sslmode=disable"
	why := ping(local)
	if why == nil {
		return local, false
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		exit(130)
	}()
	throwaway.mu.Lock()
	c, err := cluster.New()
	throwaway.cluster = c
	throwaway.mu.Unlock()
	if err != nil {
		fatalf("leakdemo: no usable PostgreSQL at %s (%v), and no throwaway cluster: %v\n"+
			"hint: install PostgreSQL (./scripts/demo.sh does), start it, or set DATABASE_URL", addr, innermost(why), err)
	}
	fmt.Printf("leakdemo: no usable PostgreSQL at %s (%v); using a throwaway cluster from %s in %s, removed on exit\n",
		addr, innermost(why), c.Bin(), c.Dir())
	return c.DSN(), false
}

// removeCluster stops and removes the throwaway cluster, if the demo
// started one.
func removeCluster() {
	throwaway.mu.Lock()
	defer throwaway.mu.Unlock()
	if throwaway.cluster != nil {
		throwaway.cluster.Close()
		throwaway.cluster = nil
	}
	cluster.RemoveTemplate()
}

// exit removes the throwaway cluster and exits.
func exit(code int) {
	removeCluster()
	os.Exit(code)
}

func ping(dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	return c.Close(ctx)
}

// innermost returns the cause at the end of err's chain, such as
// "connection refused", rather than pgx's whole account of the attempt.
// (pgx joins the errors of each address it dialled; this follows the
// first.)
func innermost(err error) error {
	for {
		next := errors.Unwrap(err)
		if joined, ok := err.(interface{ Unwrap() []error }); ok && len(joined.Unwrap()) > 0 {
			next = joined.Unwrap()[0]
		}
		if next == nil {
			return err
		}
		err = next
	}
}
