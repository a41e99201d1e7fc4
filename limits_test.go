package pgxleak_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/pgxleak/pgxleak/internal/testdriver"
)

// TestLimitsRead: pgxleak reads database/sql's limits back exactly as its
// setters left them, and database/sql behaves by what was read: as many
// connections stay idle after a burst as the MaxIdle read, and as many open
// as the MaxOpen read. It fails on a Go whose sql.DB has moved or changed
// the fields read (Read false), or their meaning (a value differs).
func TestLimitsRead(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(db *sql.DB)
		want pgxleak.Limits
	}{
		{"database/sql's defaults", func(*sql.DB) {}, pgxleak.Limits{MaxIdle: 2}},
		{"max idle", func(db *sql.DB) { db.SetMaxIdleConns(5) }, pgxleak.Limits{MaxIdle: 5}},
		{"no idle", func(db *sql.DB) { db.SetMaxIdleConns(0) }, pgxleak.Limits{}},
		{"negative idle", func(db *sql.DB) { db.SetMaxIdleConns(-1) }, pgxleak.Limits{}},
		{"max open below the default idle", func(db *sql.DB) { db.SetMaxOpenConns(1) }, pgxleak.Limits{MaxOpen: 1, MaxIdle: 1}},
		{"idle capped by open", func(db *sql.DB) { db.SetMaxOpenConns(3); db.SetMaxIdleConns(5) }, pgxleak.Limits{MaxOpen: 3, MaxIdle: 3}},
		{"open lowers idle", func(db *sql.DB) { db.SetMaxIdleConns(5); db.SetMaxOpenConns(3) }, pgxleak.Limits{MaxOpen: 3, MaxIdle: 3}},
		{"open unlimited again", func(db *sql.DB) { db.SetMaxOpenConns(3); db.SetMaxOpenConns(-1) }, pgxleak.Limits{MaxIdle: 2}},
		{"lifetime", func(db *sql.DB) { db.SetConnMaxLifetime(time.Hour) }, pgxleak.Limits{MaxIdle: 2, MaxLifetime: time.Hour}},
		{"lifetime back to forever", func(db *sql.DB) { db.SetConnMaxLifetime(time.Hour); db.SetConnMaxLifetime(-1) }, pgxleak.Limits{MaxIdle: 2}},
		{"idle time", func(db *sql.DB) { db.SetConnMaxIdleTime(time.Minute) }, pgxleak.Limits{MaxIdle: 2, MaxIdleTime: time.Minute}},
		{"all four", func(db *sql.DB) {
			db.SetMaxOpenConns(6)
			db.SetMaxIdleConns(4)
			db.SetConnMaxLifetime(time.Hour)
			db.SetConnMaxIdleTime(time.Minute)
		}, pgxleak.Limits{MaxOpen: 6, MaxIdle: 4, MaxLifetime: time.Hour, MaxIdleTime: time.Minute}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := sql.OpenDB(&testdriver.Connector{})
			defer db.Close()
			tc.set(db)
			tc.want.Read = true
			got := pgxleak.LimitsOf(db)
			require.Equal(t, tc.want, got)

			burst := 5
			if got.MaxOpen > 0 {
				burst = got.MaxOpen
			}
			holdConcurrently(t, db, burst)
			st := db.Stats()
			assert.Equal(t, got.MaxOpen, st.MaxOpenConnections, "MaxOpenConnections")
			assert.Equal(t, min(got.MaxIdle, burst), st.Idle, "idle after a burst of %d", burst)
		})
	}
}

// poolRun is what a scenario of TestSettersAsPlain saw of one pool.
type poolRun struct {
	Backends          int   // distinct backend PIDs that ran the scenario's queries
	Open, Idle        int   // db.Stats() at the end
	MaxIdleClosed     int64 // db.Stats() at the end
	MaxIdleTimeClosed int64
	LifetimeClosed    bool // MaxLifetimeClosed > 0
	Waiting           bool // WaitCount > 0
	MaxOpenSeen       int  // the most connections open at once, if the scenario looks
}

// finish fills r's counters from db.Stats().
func (r poolRun) finish(db *sql.DB) poolRun {
	st := db.Stats()
	r.Open, r.Idle = st.OpenConnections, st.Idle
	r.MaxIdleClosed, r.MaxIdleTimeClosed = st.MaxIdleClosed, st.MaxIdleTimeClosed
	r.LifetimeClosed, r.Waiting = st.MaxLifetimeClosed > 0, st.WaitCount > 0
	return r
}

// queryFor runs SELECT pg_backend_pid() on db until cond says stop, and
// returns the distinct backends it saw.
func queryFor(t *testing.T, db *sql.DB, msg string, cond func(backends int) bool) int {
	t.Helper()
	seen := map[int]bool{}
	pgtest.WaitFor(t, 20*time.Second, msg, func() bool {
		var pid int
		require.NoError(t, db.QueryRow("SELECT pg_backend_pid()").Scan(&pid))
		seen[pid] = true
		return cond(len(seen))
	})
	return len(seen)
}

// TestSettersAsPlain: a db.SetMaxOpenConns, SetMaxIdleConns,
// SetConnMaxLifetime or SetConnMaxIdleTime after pgxleak.Open behaves
// exactly as on a plain sql.Open("pgx") pool given the same limits through
// its own setters: the same backends recycled or kept, the same idle
// connections kept or closed, the same counts, the same maximum enforced.
// Each pool's run is compared with the plain one's and with what
// database/sql documents.
func TestSettersAsPlain(t *testing.T) {
	const life = 100 * time.Millisecond
	for _, tc := range []struct {
		name string
		// Open's limits, given to pgxleak as options (with the jitter
		// lifetime/1, the most allowed, where there is a lifetime) and to
		// the plain pool through its setters.
		open, idle         int
		lifetime, idleTime time.Duration
		set                func(db *sql.DB) // the user's calls after Open
		run                func(t *testing.T, db *sql.DB) poolRun
		want               poolRun
	}{
		{
			name: "SetConnMaxLifetime(0) keeps connections forever", open: 1, idle: 1, lifetime: life,
			set: func(db *sql.DB) { db.SetConnMaxLifetime(0) },
			run: func(t *testing.T, db *sql.DB) poolRun {
				start := time.Now()
				return poolRun{Backends: queryFor(t, db, "five lifetimes to pass", func(int) bool { return time.Since(start) > 5*life })}
			},
			want: poolRun{Backends: 1, Open: 1, Idle: 1},
		},
		{
			name: "SetConnMaxLifetime longer than Open's", open: 1, idle: 1, lifetime: life,
			set: func(db *sql.DB) { db.SetConnMaxLifetime(time.Hour) },
			run: func(t *testing.T, db *sql.DB) poolRun {
				start := time.Now()
				return poolRun{Backends: queryFor(t, db, "five lifetimes to pass", func(int) bool { return time.Since(start) > 5*life })}
			},
			want: poolRun{Backends: 1, Open: 1, Idle: 1},
		},
		{
			name: "SetConnMaxLifetime shorter than Open's", open: 1, idle: 1, lifetime: time.Hour,
			set: func(db *sql.DB) { db.SetConnMaxLifetime(life) },
			run: func(t *testing.T, db *sql.DB) poolRun {
				return poolRun{Backends: queryFor(t, db, "three backends", func(n int) bool { return n >= 3 })}
			},
			want: poolRun{Backends: 3, Open: 1, Idle: 1, LifetimeClosed: true},
		},
		{
			name: "SetMaxIdleConns lower", open: 4, idle: 4,
			set: func(db *sql.DB) { db.SetMaxIdleConns(1) },
			run: func(t *testing.T, db *sql.DB) poolRun {
				holdConcurrently(t, db, 4)
				return poolRun{}
			},
			want: poolRun{Open: 1, Idle: 1, MaxIdleClosed: 3},
		},
		{
			name: "SetMaxIdleConns(0)", open: 4, idle: 4,
			set: func(db *sql.DB) { db.SetMaxIdleConns(0) },
			run: func(t *testing.T, db *sql.DB) poolRun {
				holdConcurrently(t, db, 4)
				return poolRun{}
			},
			want: poolRun{MaxIdleClosed: 4},
		},
		{
			name: "SetMaxIdleConns higher", open: 6, idle: 1,
			set: func(db *sql.DB) { db.SetMaxIdleConns(5) },
			run: func(t *testing.T, db *sql.DB) poolRun {
				holdConcurrently(t, db, 6)
				return poolRun{}
			},
			want: poolRun{Open: 5, Idle: 5, MaxIdleClosed: 1},
		},
		{
			name: "SetMaxOpenConns lower", open: 4, idle: 4,
			set: func(db *sql.DB) { db.SetMaxOpenConns(2) },
			run: func(t *testing.T, db *sql.DB) poolRun {
				ctx := context.Background()
				held := hold(t, db, 2)
				got := make(chan error, 1)
				go func() {
					c, err := db.Conn(ctx)
					if err == nil {
						err = c.Close()
					}
					got <- err
				}()
				pgtest.WaitFor(t, 10*time.Second, "a third caller to wait", func() bool { return db.Stats().WaitCount == 1 })
				r := poolRun{MaxOpenSeen: db.Stats().OpenConnections}
				release(held)
				require.NoError(t, <-got)
				return r
			},
			want: poolRun{Open: 2, Idle: 2, Waiting: true, MaxOpenSeen: 2},
		},
		{
			name: "SetMaxOpenConns(0) lifts the limit", open: 2, idle: 2,
			set: func(db *sql.DB) { db.SetMaxOpenConns(0) },
			run: func(t *testing.T, db *sql.DB) poolRun {
				held := hold(t, db, 6) // one at a time: with a limit of 2 the third would wait forever
				r := poolRun{MaxOpenSeen: db.Stats().OpenConnections}
				release(held)
				return r
			},
			want: poolRun{Open: 2, Idle: 2, MaxIdleClosed: 4, MaxOpenSeen: 6},
		},
		{
			name: "SetConnMaxIdleTime closes idle connections", open: 3, idle: 3,
			set: func(db *sql.DB) { db.SetConnMaxIdleTime(life) },
			run: func(t *testing.T, db *sql.DB) poolRun {
				holdConcurrently(t, db, 3)
				pgtest.WaitFor(t, 20*time.Second, "the idle connections to be closed", func() bool { return db.Stats().OpenConnections == 0 })
				return poolRun{}
			},
			want: poolRun{MaxIdleTimeClosed: 3},
		},
		{
			name: "SetConnMaxIdleTime(0) keeps them", open: 3, idle: 3, idleTime: life,
			set: func(db *sql.DB) { db.SetConnMaxIdleTime(0) },
			run: func(t *testing.T, db *sql.DB) poolRun {
				holdConcurrently(t, db, 3)
				// database/sql's cleaner runs at most once a second:
				// give it two chances.
				start := time.Now()
				pgtest.WaitFor(t, 20*time.Second, "two cleaner periods to pass", func() bool { return time.Since(start) > 2200*time.Millisecond })
				return poolRun{}
			},
			want: poolRun{Open: 3, Idle: 3},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			plainDSN := pgtest.NewDatabase(t)
			plain, err := sql.Open("pgx", plainDSN)
			require.NoError(t, err)
			defer plain.Close()
			plain.SetMaxOpenConns(tc.open)
			plain.SetMaxIdleConns(tc.idle)
			plain.SetConnMaxLifetime(tc.lifetime)
			plain.SetConnMaxIdleTime(tc.idleTime)

			db, _ := openTest(t, pgxleak.WithMaxOpenConns(tc.open), pgxleak.MaxIdleConnsForTest(tc.idle),
				pgxleak.WithConnMaxLifetime(tc.lifetime), pgxleak.LifetimeJitterForTest(tc.lifetime),
				pgxleak.ConnMaxIdleTimeForTest(tc.idleTime))

			tc.set(plain)
			tc.set(db)
			var got [2]poolRun
			for i, db := range []*sql.DB{plain, db} {
				got[i] = tc.run(t, db).finish(db)
			}
			assert.Equal(t, tc.want, got[0], "plain database/sql")
			assert.Equal(t, got[0], got[1], "pgxleak against plain database/sql")
			st := stats(t, db)
			assert.Zero(t, st.LifetimeDiscarded, "connections discarded for a jitter no longer in force")
		})
	}
}
