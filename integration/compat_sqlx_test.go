package integration_test

import (
	"database/sql"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pgxleak/pgxleak"
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
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = dbx.Close() })
			return dbx
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dbx := tc.open(t)
			ctx := t.Context()
			if got := dbx.Rebind("SELECT ? , ?"); got != "SELECT $1 , $2" {
				t.Fatalf("Rebind = %q: sqlx does not use $n placeholders for %q", got, dbx.DriverName())
			}
			dbx.MustExecContext(ctx, `CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL, email text)`)

			// NamedExec with a struct, a map and a slice (batch insert).
			if _, err := dbx.NamedExecContext(ctx, `INSERT INTO users (id, name, email) VALUES (:id, :name, :email)`,
				sqlxUser{ID: 1, Name: "ada", Email: sql.NullString{String: "ada@example.com", Valid: true}}); err != nil {
				t.Fatalf("NamedExec struct: %v", err)
			}
			if _, err := dbx.NamedExecContext(ctx, `INSERT INTO users (id, name) VALUES (:id, :name)`,
				map[string]any{"id": 2, "name": "bob"}); err != nil {
				t.Fatalf("NamedExec map: %v", err)
			}
			if _, err := dbx.NamedExecContext(ctx, `INSERT INTO users (id, name) VALUES (:id, :name)`,
				[]sqlxUser{{ID: 3, Name: "cy"}, {ID: 4, Name: "di"}}); err != nil {
				t.Fatalf("NamedExec batch: %v", err)
			}

			var u sqlxUser
			if err := dbx.GetContext(ctx, &u, `SELECT * FROM users WHERE id = $1`, 1); err != nil ||
				u != (sqlxUser{1, "ada", sql.NullString{String: "ada@example.com", Valid: true}}) {
				t.Errorf("Get = %+v, %v", u, err)
			}
			if err := dbx.GetContext(ctx, &u, `SELECT * FROM users WHERE id = $1`, 99); !errors.Is(err, sql.ErrNoRows) {
				t.Errorf("Get of a missing row = %v, want sql.ErrNoRows", err)
			}
			var users []sqlxUser
			if err := dbx.SelectContext(ctx, &users, dbx.Rebind(`SELECT * FROM users WHERE id > ? ORDER BY id`), 1); err != nil || len(users) != 3 || users[2].Name != "di" {
				t.Errorf("Select = %+v, %v", users, err)
			}
			q, args, err := sqlx.In(`SELECT name FROM users WHERE id IN (?) ORDER BY id`, []int{2, 4})
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			if err := dbx.SelectContext(ctx, &names, dbx.Rebind(q), args...); err != nil || len(names) != 2 || names[0] != "bob" || names[1] != "di" {
				t.Errorf("In+Rebind Select = %v, %v", names, err)
			}
			rows, err := dbx.NamedQueryContext(ctx, `SELECT id, name FROM users WHERE name = :name`, map[string]any{"name": "cy"})
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var got sqlxUser
				if err := rows.StructScan(&got); err != nil || got.ID != 3 {
					t.Errorf("NamedQuery row = %+v, %v", got, err)
				}
			}
			if err := rows.Close(); err != nil {
				t.Fatal(err)
			}

			// Beginx: commit.
			tx, err := dbx.Beginx()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.NamedExecContext(ctx, `UPDATE users SET email = :email WHERE id = :id`, map[string]any{"id": 2, "email": "bob@example.com"}); err != nil {
				t.Fatal(err)
			}
			var inTxEmail string
			if err := tx.GetContext(ctx, &inTxEmail, tx.Rebind(`SELECT email FROM users WHERE id = ?`), 2); err != nil || inTxEmail != "bob@example.com" {
				t.Errorf("Get inside Beginx = %q, %v", inTxEmail, err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			// MustBegin: roll back.
			mtx := dbx.MustBegin()
			mtx.MustExec(`DELETE FROM users`)
			var inTx int
			if err := mtx.Get(&inTx, `SELECT count(*) FROM users`); err != nil || inTx != 0 {
				t.Errorf("count inside the transaction = %d, %v", inTx, err)
			}
			if err := mtx.Rollback(); err != nil {
				t.Fatal(err)
			}
			var email string
			if err := dbx.Get(&email, `SELECT email FROM users WHERE id = 2`); err != nil || email != "bob@example.com" {
				t.Errorf("committed email = %q, %v", email, err)
			}
			var n int
			if err := dbx.Get(&n, `SELECT count(*) FROM users`); err != nil || n != 4 {
				t.Errorf("count after rollback = %d, %v; want 4", n, err)
			}
			if got := stats(t, dbx.DB).Checkouts; got < 10 {
				t.Errorf("the tracker counted %d checkouts; it is not tracking sqlx's calls", got)
			}
			pgxleak.VerifyNone(t, dbx.DB)
		})
	}
}

// TestSqlxUnknownDriverName pins the reason for the BindDriver line: sqlx
// leaves "?" alone for a driver name it does not know.
func TestSqlxUnknownDriverName(t *testing.T) {
	t.Parallel()
	if got := sqlx.BindType("pgxleak-not-registered"); got != sqlx.UNKNOWN {
		t.Fatalf("BindType = %d, want UNKNOWN", got)
	}
	db, err := sql.Open("pgxleak", "postgres://unused")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got := sqlx.NewDb(db, "pgxleak-not-registered").Rebind("?"); got != "?" {
		t.Fatalf("Rebind with an unknown driver name = %q; sqlx has learnt new names, update the README", got)
	}
}

// TestSqlxLeakAttribution leaks a Rows and a transaction through sqlx and
// checks that both are attributed to this file's lines, not to sqlx.
func TestSqlxLeakAttribution(t *testing.T) {
	t.Parallel()
	rec := newLeakRecorder()
	db, _ := openTest(t, rec.option(), pgxleak.WithLeakThreshold(50*time.Millisecond))
	dbx := sqlx.NewDb(db, "pgx")
	dbx.MustExec(`CREATE TABLE t (x int)`)

	_, file, line, _ := runtime.Caller(0)
	rows, err := dbx.Queryx(`SELECT 1 UNION ALL SELECT 2`) // leaked: never closed
	if err != nil {
		t.Fatal(err)
	}
	rowsLine := line + 1
	_, _, line, _ = runtime.Caller(0)
	tx := dbx.MustBegin() // leaked: never committed
	txLine := line + 1
	tx.MustExec(`INSERT INTO t VALUES (1)`)

	cos := checkouts(t, db)
	if len(cos) != 2 {
		t.Fatalf("%d checkouts, want 2", len(cos))
	}
	for i, wantLine := range []int{rowsLine, txLine} {
		if c := cos[i].Culprit; c.File != file || c.Line != wantLine {
			t.Errorf("checkout %d: culprit %s:%d, want %s:%d\n%s", i, c.File, c.Line, file, wantLine, stackString(cos[i].Stack))
		}
	}
	l := rec.wait(t, 10*time.Second, func(l pgxleak.Leak) bool {
		return l.Kind == pgxleak.LeakSuspected && l.TxStatus == "in transaction"
	})
	if l.Culprit.File != file || l.Culprit.Line != txLine || l.LastStatement != `INSERT INTO t VALUES (1)` {
		t.Errorf("report: culprit %s:%d, last statement %q; want %s:%d, the INSERT", l.Culprit.File, l.Culprit.Line, l.LastStatement, file, txLine)
	}

	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	pgxleak.VerifyNone(t, db)
}
