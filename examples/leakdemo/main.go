// Command leakdemo is a small HTTP service with three handlers: one leaks a
// connection, one holds a connection too long, one is healthy. It calls each
// once, prints the reports pgxleak makes (each names the leaking line of this
// file), then drains the pool: the drain lists what is still out instead of
// hanging, and the program exits.
//
//	go run ./examples/leakdemo
//
// With -http it keeps running instead and serves the service and pgxleak's
// live page, so that you can watch the pool fill up and the culprit lines:
//
//	go run ./examples/leakdemo -http :8080
//	open http://localhost:8080/debug/pgxleak/
//
// It connects to DATABASE_URL, else to 127.0.0.1:5432 (user postgres, database
// test), else to a throwaway cluster it starts from the local PostgreSQL binaries.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/livepage"
)

type server struct{ db *sql.DB }

// leaky begins a transaction on a context that never ends and forgets it:
// the connection never comes back to the pool.
func (s *server) leaky(w http.ResponseWriter, r *http.Request) {
	tx, err := s.db.Begin() // BUG: never committed or rolled back
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var n int
	_ = tx.QueryRow("SELECT count(*) FROM pg_stat_activity").Scan(&n)
	fmt.Fprintln(w, n)
}

// slow holds a connection longer than the leak threshold, then gives it
// back: a suspected leak, and then a "returned after" follow-up.
func (s *server) slow(w http.ResponseWriter, r *http.Request) {
	conn, err := s.db.Conn(r.Context()) // held across slow work
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	time.Sleep(1500 * time.Millisecond) // "calling another service" while holding the connection
	fmt.Fprintln(w, "done")
}

// healthy takes a connection for one query only.
func (s *server) healthy(w http.ResponseWriter, r *http.Request) {
	var now time.Time
	if err := s.db.QueryRowContext(r.Context(), "SELECT now()").Scan(&now); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	fmt.Fprintln(w, now)
}

func main() {
	addr := flag.String("http", "", "keep running and serve the service and the live page at this address (e.g. :8080)")
	flag.Parse()
	dsn, fromEnv := database() // DATABASE_URL, the local server, or a throwaway cluster
	defer removeCluster()
	// Reports go to stdout, without timestamps, stack attributes or the
	// checkout time, so the demo's output is easy to read.
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			switch a.Key {
			case slog.TimeKey, "stack", "checked_out_at":
				return slog.Attr{}
			}
			return a
		},
	}))
	reports := make(chan pgxleak.Leak, 16)
	if *addr != "" {
		serve(*addr, dsn, fromEnv, logger)
		return
	}
	db, err := pgxleak.Open("pgx", dsn,
		pgxleak.WithMaxOpenConns(4),
		pgxleak.WithMinIdleConns(2),
		pgxleak.WithLeakThreshold(300*time.Millisecond),
		pgxleak.WithLogger(logger),
		pgxleak.WithOnLeak(func(l pgxleak.Leak) { reports <- l }),
	)
	if err != nil {
		fatalf("leakdemo: %v\n%s", err, hint(fromEnv))
	}

	s := &server{db: db}
	mux := http.NewServeMux()
	mux.HandleFunc("/leaky", s.leaky)
	mux.HandleFunc("/slow", s.slow)
	mux.HandleFunc("/healthy", s.healthy)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for _, path := range []string{"/healthy", "/leaky", "/slow", "/healthy"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			fatalf("leakdemo: GET %s: %v", path, err)
		}
		resp.Body.Close()
		fmt.Printf("GET %-8s -> %s\n", path, resp.Status)
	}

	// Wait for the three reports: the leak, the slow holder, and the slow
	// holder's follow-up once it returned.
	want := map[string]bool{"leak": false, "slow": false, "slow returned": false}
	timeout := time.After(10 * time.Second)
	for !want["leak"] || !want["slow"] || !want["slow returned"] {
		select {
		case l := <-reports:
			switch fn := l.Culprit.Function; {
			case fn == "main.(*server).leaky":
				want["leak"] = true
			case fn == "main.(*server).slow" && l.Kind == pgxleak.Resolved:
				want["slow returned"] = true
			case fn == "main.(*server).slow":
				want["slow"] = true
			}
		case <-timeout:
			fatalf("leakdemo: expected reports did not arrive: %v", want)
		}
	}

	st, err := pgxleak.Stats(db)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("\npool: %d checkouts, %d returns, %d still out; %d suspected, %d resolved\n",
		st.Checkouts, st.Returns, st.CheckedOut, st.Suspected, st.Resolved)

	// Shut down: wait up to a second for connections to come back, then
	// close the pool and list whatever is still out.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err = pgxleak.Drain(ctx, db)
	var leaks *pgxleak.LeakError
	switch {
	case errors.As(err, &leaks):
		fmt.Printf("\ndrained; still out at shutdown:\n")
		for _, c := range leaks.Checkouts {
			fmt.Printf("  %s (%s, last statement %q)\n", c, c.TxStatus, c.LastStatement)
		}
	case err != nil:
		fatalf("leakdemo: drain: %v", err)
	default:
		fmt.Println("\ndrained cleanly")
	}
}

// fatalf logs the error and exits, removing the throwaway cluster if the
// demo started one.
func fatalf(format string, args ...any) {
	log.Printf(format, args...)
	exit(1)
}

// hint says what to do when the pool cannot be opened, depending on where
// the DSN came from.
func hint(fromEnv bool) string {
	if fromEnv {
		return "hint: is the server DATABASE_URL names running, and does it accept this user and database?"
	}
	return "hint: start PostgreSQL on 127.0.0.1:5432 (user postgres, database test), or set DATABASE_URL"
}

// serve runs the demo service with the live page until interrupted. A
// client calls the handlers in a loop: the leaky one every few seconds, so
// the pool of 4 fills up within a minute and the healthy requests start
// waiting; then the demo drains the pool and starts over.
func serve(addr, dsn string, fromEnv bool, logger *slog.Logger) {
	// Each round opens a fresh pool: the page shows the current one.
	var page atomic.Pointer[http.Handler]
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pgxleak/", func(w http.ResponseWriter, r *http.Request) { // in a real service: behind your own authentication
		if h := page.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		http.Error(w, "no pool yet", http.StatusServiceUnavailable)
	})
	srv := &http.Server{Addr: addr, Handler: mux}
	go func() {
		if err := srv.ListenAndServe(); err != nil {
			fatalf("leakdemo: %v", err)
		}
	}()
	fmt.Printf("leakdemo: open http://%s/debug/pgxleak/ and watch the pool fill up (Ctrl-C to stop)\n", displayAddr(addr))
	for round := 1; ; round++ {
		db, err := pgxleak.Open("pgx", dsn,
			pgxleak.WithPoolName("leakdemo"),
			pgxleak.WithMaxOpenConns(4),
			pgxleak.WithLeakThreshold(2*time.Second),
			pgxleak.WithLogger(logger),
		)
		if err != nil {
			fatalf("leakdemo: %v\n%s", err, hint(fromEnv))
		}
		h := livepage.Handler(db)
		page.Store(&h)
		s := &server{db: db}
		calls := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/leaky":
				s.leaky(w, r)
			case "/slow":
				s.slow(w, r)
			default:
				s.healthy(w, r)
			}
		}))
		fmt.Printf("leakdemo: round %d: a fresh pool of 4; a leak every 8 seconds fills it in half a minute\n", round)
		client := &http.Client{Timeout: 2 * time.Second} // requests stuck behind a full pool give up
		for i := range 120 {
			path := "/healthy"
			switch {
			case i%16 == 4:
				path = "/leaky"
			case i%16 == 10:
				path = "/slow"
			}
			go func() {
				if resp, err := client.Get(calls.URL + path); err == nil {
					resp.Body.Close()
				}
			}()
			time.Sleep(500 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = pgxleak.Drain(ctx, db) // reports what is still out, and closes the pool
		cancel()
		calls.Close() // after the drain, which ends the calls still waiting for a connection
	}
}

func displayAddr(addr string) string {
	if strings.HasPrefix(addr, ":") {
		return "localhost" + addr
	}
	return addr
}
