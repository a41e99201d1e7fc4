package integration_test

import (
	"database/sql"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
)

// sqlx chooses its placeholder style by driver name, and knows "pgx" but not
// "pgxleak". This is the one line the README tells users to add when they
// open with sqlx.Open/Connect("pgxleak", dsn).
func registerSqlxBind() { sqlx.BindDriver("pgxleak", sqlx.DOLLAR) }

type sqlxUser struct {
	ID    int            `db:"id"`
	Name  string         `db:"name"`
	Email sql.NullString `db:"email"`
}

// TestSqlx runs sqlx's API over both ways of getting a *sqlx.DB on
// pgxleak: NewDb over a pgxleak *sql.DB with the driver name "pgx", and
// sqlx.Connect("pgxleak", dsn) after the documented BindDriver line.
func TestSqlx(t *testing.T) {
	t.Parallel()
	registerSqlxBind()
	for _, tc := range []struct {
		name string
		open func(t *testing.T) *sqlx.DB
	}{
		{"NewDb(pgxleak.Open, pgx)", func(t *testing.T) *sqlx.DB {
			db, _ := openTest(t)
			return sqlx.NewDb(db, "pgx")
		}},
		{"Connect(pgxleak)", func(t *testing.T) *sqlx.DB {
			_, dsn := openTest(t)
			dbx, err := sqlx.Connect("pgxleak", dsn)
			require.NoError(t, err)
			t.Cleanup(func() { _ = dbx.Close() })
			return dbx
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dbx := tc.open(t)
			ctx := t.Context()
			require.Equal(t, "SELECT $1 , $2", dbx.Rebind("SELECT ? , ?"), "sqlx does not use $n placeholders for %q", dbx.DriverName())
			dbx.MustExecContext(ctx, `CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL, email text)`)

			// NamedExec with a struct, a map and a slice (batch insert).
			_, err := dbx.NamedExecContext(ctx, `INSERT INTO users (id, name, email) VALUES (:id, :name, :email)`,
				sqlxUser{ID: 1, Name: "ada", Email: sql.NullString{String: "ada@example.com", Valid: true}})
			require.NoError(t, err, "NamedExec struct")
			_, err = dbx.NamedExecContext(ctx, `INSERT INTO users (id, name) VALUES (:id, :name)`,
				map[string]any{"id": 2, "name": "bob"})
			require.NoError(t, err, "NamedExec map")
			_, err = dbx.NamedExecContext(ctx, `INSERT INTO users (id, name) VALUES (:id, :name)`,
				[]sqlxUser{{ID: 3, Name: "cy"}, {ID: 4, Name: "di"}})
			require.NoError(t, err, "NamedExec batch")

			var u sqlxUser
			if assert.NoError(t, dbx.GetContext(ctx, &u, `SELECT * FROM users WHERE id = $1`, 1), "Get") {
				assert.Equal(t, sqlxUser{1, "ada", sql.NullString{String: "ada@example.com", Valid: true}}, u, "Get")
			}
			assert.ErrorIs(t, dbx.GetContext(ctx, &u, `SELECT * FROM users WHERE id = $1`, 99), sql.ErrNoRows, "Get of a missing row")
			var users []sqlxUser
			if assert.NoError(t, dbx.SelectContext(ctx, &users, dbx.Rebind(`SELECT * FROM users WHERE id > ? ORDER BY id`), 1), "Select") &&
				assert.Len(t, users, 3, "Select") {
				assert.Equal(t, "di", users[2].Name, "Select")
			}
			q, args, err := sqlx.In(`SELECT name FROM users WHERE id IN (?) ORDER BY id`, []int{2, 4})
			require.NoError(t, err)
			var names []string
			assert.NoError(t, dbx.SelectContext(ctx, &names, dbx.Rebind(q), args...), "In+Rebind Select")
			assert.Equal(t, []string{"bob", "di"}, names, "In+Rebind Select")
			rows, err := dbx.NamedQueryContext(ctx, `SELECT id, name FROM users WHERE name = :name`, map[string]any{"name": "cy"})
			require.NoError(t, err)
			for rows.Next() {
				var got sqlxUser
				assert.NoError(t, rows.StructScan(&got), "NamedQuery row")
				assert.Equal(t, 3, got.ID, "NamedQuery row")
			}
			require.NoError(t, rows.Close())

			// Beginx: commit.
			tx, err := dbx.Beginx()
			require.NoError(t, err)
			_, err = tx.NamedExecContext(ctx, `UPDATE users SET email = :email WHERE id = :id`, map[string]any{"id": 2, "email": "bob@example.com"})
			require.NoError(t, err)
			var inTxEmail string
			assert.NoError(t, tx.GetContext(ctx, &inTxEmail, tx.Rebind(`SELECT email FROM users WHERE id = ?`), 2), "Get inside Beginx")
			assert.Equal(t, "bob@example.com", inTxEmail, "Get inside Beginx")
			require.NoError(t, tx.Commit())
			// MustBegin: roll back.
			mtx := dbx.MustBegin()
			mtx.MustExec(`DELETE FROM users`)
			var inTx int
			assert.NoError(t, mtx.Get(&inTx, `SELECT count(*) FROM users`), "count inside the transaction")
			assert.Zero(t, inTx, "count inside the transaction")
			require.NoError(t, mtx.Rollback())
			var email string
			assert.NoError(t, dbx.Get(&email, `SELECT email FROM users WHERE id = 2`), "committed email")
			assert.Equal(t, "bob@example.com", email, "committed email")
			var n int
			assert.NoError(t, dbx.Get(&n, `SELECT count(*) FROM users`), "count after rollback")
			assert.Equal(t, 4, n, "count after rollback")
			assert.GreaterOrEqual(t, stats(t, dbx.DB).Checkouts, uint64(10), "checkouts counted: is the tracker tracking sqlx's calls?")
			pgxleak.VerifyNone(t, dbx.DB)
		})
	}
}

// TestSqlxUnknownDriverName pins the reason for the BindDriver line: sqlx
// leaves "?" alone for a driver name it does not know.
func TestSqlxUnknownDriverName(t *testing.T) {
	t.Parallel()
	require.Equal(t, sqlx.UNKNOWN, sqlx.BindType("pgxleak-not-registered"))
	db, err := sql.Open("pgxleak", "postgres://unused")
	require.NoError(t, err)
	defer db.Close()
	require.Equal(t, "?", sqlx.NewDb(db, "pgxleak-not-registered").Rebind("?"),
		"Rebind with an unknown driver name: sqlx has learnt new names, update the README")
}

// TestSqlxLeakAttribution leaks a Rows and a transaction through sqlx and
// checks that both are attributed to this file's lines, not to sqlx.
func TestSqlxLeakAttribution(t *testing.T) {
	t.Parallel()
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, rec.Option(), pgxleak.WithLeakThreshold(50*time.Millisecond))
	dbx := sqlx.NewDb(db, "pgx")
	dbx.MustExec(`CREATE TABLE t (x int)`)

	_, file, line, _ := runtime.Caller(0)
	rows, err := dbx.Queryx(`SELECT 1 UNION ALL SELECT 2`) // leaked: never closed
	require.NoError(t, err)
	rowsLine := line + 1
	_, _, line, _ = runtime.Caller(0)
	tx := dbx.MustBegin() // leaked: never committed
	txLine := line + 1
	tx.MustExec(`INSERT INTO t VALUES (1)`)

	// Checkouts lists the oldest first, by the coarse clock: checkouts
	// made within one of its ticks come in any order.
	cos := checkouts(t, db)
	require.Len(t, cos, 2)
	var got, stacks []string
	for _, c := range cos {
		got = append(got, fmt.Sprintf("%s:%d", c.Culprit.File, c.Culprit.Line))
		stacks = append(stacks, stackString(c.Stack))
	}
	want := []string{fmt.Sprintf("%s:%d", file, rowsLine), fmt.Sprintf("%s:%d", file, txLine)}
	assert.ElementsMatch(t, want, got, "the checkouts' culprits\n%s", strings.Join(stacks, "\n"))
	l := rec.Wait(t, 10*time.Second, func(l pgxleak.Leak) bool {
		return l.Kind == pgxleak.LeakSuspected && l.TxStatus == "in transaction"
	})
	assert.Equal(t, fmt.Sprintf("%s:%d", file, txLine), fmt.Sprintf("%s:%d", l.Culprit.File, l.Culprit.Line), "the report's culprit")
	assert.Equal(t, `INSERT INTO t VALUES (1)`, l.LastStatement)

	require.NoError(t, rows.Close())
	require.NoError(t, tx.Rollback())
	pgxleak.VerifyNone(t, db)
}
