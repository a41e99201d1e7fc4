// Package app is the code of module myservice that holds and waits.
package app

import (
	"context"
	"database/sql"
	"encoding/json"
	"time"

	"github.com/pgxleak/pgxleak"
)

// Report runs Stuck and renders, as JSON, the culprit, the holder's
// current line and verdict, and the waiters' lines.
func Report(db *sql.DB) ([]byte, error) {
	ins, err := Stuck(db)
	if err != nil {
		return nil, err
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
	return json.Marshal(out)
}

// Stuck holds the pool's only connection, makes a second goroutine wait
// for one, and inspects the pool meanwhile.
func Stuck(db *sql.DB) (pgxleak.Inspection, error) {
	ctx := context.Background()
	held, release, done := make(chan error), make(chan struct{}), make(chan struct{})
	go hold(db, held, release)
	if err := <-held; err != nil {
		return pgxleak.Inspection{}, err
	}
	go wait(db, done)
	for deadline := time.Now().Add(10 * time.Second); db.Stats().WaitCount == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	ins, err := pgxleak.Inspect(ctx, db)
	close(release)
	<-done
	return ins, err
}

func hold(db *sql.DB, held chan<- error, release <-chan struct{}) {
	c, err := db.Conn(context.Background()) // checked out
	held <- err
	if err != nil {
		return
	}
	<-release // holder now at
	c.Close()
}

func wait(db *sql.DB, done chan<- struct{}) {
	defer close(done)
	c, err := db.Conn(context.Background()) // waits
	if err == nil {
		c.Close()
	}
}
