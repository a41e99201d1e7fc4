package livepage_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/pgxleak/pgxleak/livepage"
)

// get fetches url and returns its body, failing t on any error or a
// status other than 200.
func get(t testing.TB, url string) (string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET %s: %s", url, body)
	return string(body), resp.Header
}

// getPage fetches the JSON, decoding it strictly into the documented
// struct: a field the struct does not have fails the test.
func getPage(t testing.TB, url string) livepage.Page {
	t.Helper()
	body, h := get(t, url+"?format=json")
	require.Equal(t, "application/json", h.Get("Content-Type"))
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	var p livepage.Page
	require.NoError(t, dec.Decode(&p), "decoding the JSON into livepage.Page:\n%s", body)
	return p
}

// defaultMaxOpen is pgxleak's default WithMaxOpenConns on this machine.
func defaultMaxOpen() int { return max(4, 2*runtime.GOMAXPROCS(0)) }

func poolNamed(t testing.TB, p livepage.Page, name string) livepage.PoolPage {
	t.Helper()
	for _, pp := range p.Pools {
		if pp.Pool == name {
			return pp
		}
	}
	require.FailNowf(t, "no such pool", "no pool %q on the page", name)
	return livepage.PoolPage{}
}

// TestHandlerLeakCulprit: a live leak's culprit line is in the HTML and in
// the JSON, which round-trips through the documented struct.
func TestHandlerLeakCulprit(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithPoolName("page-leak"), pgxleak.WithWaitSampleInterval(20*time.Millisecond),
		pgxleak.WithIdleInTransactionTimeout(90*time.Second))
	at := lineBelow()
	rows, err := db.QueryContext(t.Context(), "SELECT 1") // leaked until the test ends
	require.NoError(t, err)
	defer rows.Close()

	srv := httptest.NewServer(livepage.Handler(db))
	defer srv.Close()

	html, h := get(t, srv.URL)
	assert.Equal(t, "text/html; charset=utf-8", h.Get("Content-Type"))
	assert.Contains(t, html, at.Short(), "the page shows the culprit")
	assert.Contains(t, html, "Pool page-leak", "the page shows the pool's name")
	assert.Contains(t, html, "<dt>idle-in-transaction timeout</dt><dd>1m30s</dd>", "the page's settings")
	assert.Contains(t, html, "<dt>server view (pg_stat_activity)</dt><dd>true</dd>", "the page's settings")

	p := getPage(t, srv.URL)
	pp := poolNamed(t, p, "page-leak")
	require.Len(t, pp.Checkouts, 1)
	require.Equal(t, at.Line, pp.Checkouts[0].Culprit.Line, "the checkout's culprit")
	require.True(t, strings.HasSuffix(pp.Checkouts[0].Culprit.File, "handler_test.go"), "the checkout's culprit: %+v", pp.Checkouts[0].Culprit)
	assert.Equal(t, "SELECT 1", pp.Checkouts[0].LastStatement)
	assert.EqualValues(t, 1, pp.Stats.CheckedOut)
	assert.Equal(t, defaultMaxOpen(), pp.Settings.MaxOpen, "settings")
	assert.True(t, pp.Settings.Tuned, "settings")
	assert.Equal(t, 20*time.Millisecond, pp.SampleInterval)
	assert.True(t, pp.Settings.ServerView, "settings")
	assert.Equal(t, 90*time.Second, pp.Settings.IdleInTransactionTimeout, "settings")
	// Round trip: what was decoded encodes to the same JSON.
	body, _ := get(t, srv.URL+"?format=json")
	var again livepage.Page
	require.NoError(t, json.Unmarshal([]byte(body), &again))
	var b1, b2 bytes.Buffer
	_ = json.NewEncoder(&b1).Encode(again)
	var raw any
	_ = json.Unmarshal([]byte(body), &raw)
	var back any
	_ = json.Unmarshal(b1.Bytes(), &back)
	_ = json.NewEncoder(&b2).Encode(raw)
	var b3 bytes.Buffer
	_ = json.NewEncoder(&b3).Encode(back)
	assert.Equal(t, b2.String(), b3.String(), "the JSON survives a round trip through livepage.Page")
}

// TestHandlerPlotPoints: every polyline has one point per sample.
func TestHandlerPlotPoints(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithPoolName("page-plot"), pgxleak.WithWaitSampleInterval(10*time.Millisecond))
	srv := httptest.NewServer(livepage.Handler(db))
	defer srv.Close()
	for range 5 {
		_, err := db.ExecContext(t.Context(), "SELECT 1")
		require.NoError(t, err)
	}
	var before livepage.PoolPage
	pgtest.WaitFor(t, 10*time.Second, "5 samples", func() bool {
		before = getPage(t, srv.URL).Pools[0]
		return len(before.History) >= 5
	})
	html, _ := get(t, srv.URL)
	after := getPage(t, srv.URL).Pools[0]

	svgs := regexp.MustCompile(`(?s)<svg class="plot"[^>]*data-points="(\d+)">(.*?)</svg>`).FindAllStringSubmatch(html, -1)
	require.Len(t, svgs, 5, "plots")
	for _, s := range svgs {
		n, _ := strconv.Atoi(s[1])
		assert.True(t, n >= len(before.History) && n <= len(after.History),
			"plot of %d samples; the history had %d before and %d after", n, len(before.History), len(after.History))
		lines := regexp.MustCompile(`<polyline class="s\d" points="([^"]*)"`).FindAllStringSubmatch(s[2], -1)
		assert.NotEmpty(t, lines, "a plot without a polyline: %s", s[2])
		for _, l := range lines {
			assert.Len(t, strings.Fields(l[1]), n, "points in a polyline: one per sample")
		}
	}
	var sum uint64
	for _, s := range after.History {
		sum += s.Checkouts
	}
	assert.GreaterOrEqual(t, sum, uint64(5), "checkouts in all the history")
	assert.Equal(t, defaultMaxOpen(), after.History[len(after.History)-1].MaxOpen, "the last sample's MaxOpen")
}

// TestHandlerEscapes: statement text and pool names are user input; a
// <script> in them is shown as text.
func TestHandlerEscapes(t *testing.T) {
	const evil = `<script>alert("x")</script>`
	db, _ := openTest(t, pgxleak.WithPoolName("<b>"+evil))
	rows, err := db.QueryContext(t.Context(), "SELECT '"+evil+"'")
	require.NoError(t, err)
	defer rows.Close()
	srv := httptest.NewServer(livepage.Handler(db))
	defer srv.Close()
	for _, q := range []string{"", "?fragment=pools"} {
		html, _ := get(t, srv.URL+q)
		assert.NotContains(t, html, "<script>alert", "%q: user text rendered as markup", q)
		assert.NotContains(t, html, "<b>", "%q: user text rendered as markup", q)
		assert.Contains(t, html, "SELECT &#39;&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&#39;", "%q: the statement is shown as text", q)
	}
}

// TestHandlerMethods: only GET and HEAD.
func TestHandlerMethods(t *testing.T) {
	srv := httptest.NewServer(livepage.Handler())
	defer srv.Close()
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodOptions} {
		req, _ := http.NewRequest(m, srv.URL, strings.NewReader("x"))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, m)
		assert.Equal(t, "GET, HEAD", resp.Header.Get("Allow"), m)
	}
	resp, err := http.Head(srv.URL)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode, "HEAD")
}

// TestHandlerPools: the pools given, by name; a closed pool goes.
func TestHandlerPools(t *testing.T) {
	a, _ := openTest(t, pgxleak.WithPoolName("page-pools-b"))
	b, _ := openTest(t, pgxleak.WithPoolName("page-pools-a"))
	srv := httptest.NewServer(livepage.Handler(a, b))
	defer srv.Close()
	html, _ := get(t, srv.URL)
	ia, ib := strings.Index(html, "Pool page-pools-a"), strings.Index(html, "Pool page-pools-b")
	assert.True(t, ia >= 0 && ib >= ia, "pools not both listed by name, in order (a at %d, b at %d)", ia, ib)
	p := getPage(t, srv.URL)
	poolNamed(t, p, "page-pools-a")
	poolNamed(t, p, "page-pools-b")

	one := httptest.NewServer(livepage.Handler(a))
	defer one.Close()
	if pools := getPage(t, one.URL).Pools; assert.Len(t, pools, 1, "the pools Handler(a) shows") {
		assert.Equal(t, "page-pools-b", pools[0].Pool)
	}
	require.NoError(t, b.Close())
	html, _ = get(t, srv.URL)
	assert.NotContains(t, html, "Pool page-pools-a", "a closed pool is still listed")
	other, err := sql.Open("pgx", "postgres://nobody@127.0.0.1:1/none") // never connects
	require.NoError(t, err)
	defer other.Close()
	plain := httptest.NewServer(livepage.Handler(other))
	defer plain.Close()
	html, _ = get(t, plain.URL)
	assert.Contains(t, html, "not opened by pgxleak", "a *sql.DB not opened through pgxleak is explained")
}

// TestHandlerFleet: two pools with different names on the same server are
// two application_names, with their connection counts, on the page and in
// CheckCapacity.
func TestHandlerFleet(t *testing.T) {
	// pgtest's DSN names its connections; pgxleak would keep that name.
	cfg, err := pgx.ParseConfig(pgtest.NewDatabase(t))
	require.NoError(t, err)
	dsn := fmt.Sprintf("host=%s port=%d user=%s password='%s' dbname=%s sslmode=disable",
		cfg.Host, cfg.Port, cfg.User, strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(cfg.Password), cfg.Database)
	open := func(name string, n int) (*sql.DB, string) {
		db, err := pgxleak.Open("pgx", dsn, pgxleak.WithPoolName(name), pgxleak.WithLogger(quiet))
		require.NoError(t, err)
		t.Cleanup(func() { _ = db.Close() })
		for range n {
			c, err := db.Conn(t.Context())
			require.NoError(t, err)
			t.Cleanup(func() { _ = c.Close() })
		}
		var app string
		require.NoError(t, db.QueryRowContext(t.Context(), "SELECT current_setting('application_name')").Scan(&app))
		return db, app
	}
	a, appA := open("fleet-a", 2)
	b, appB := open("fleet-b", 3)
	require.NotEqual(t, appA, appB, "the pools' application_names")
	require.True(t, strings.HasSuffix(appA, "/fleet-a"), "application_name %q", appA)
	// The query above took one more connection from each pool: 3 and 4.
	want := map[string]int{appA: 3, appB: 4}
	counts := func(fleet []pgxleak.FleetUsage) map[string]int {
		got := map[string]int{}
		for _, f := range fleet {
			if _, ok := want[f.ApplicationName]; ok {
				got[f.ApplicationName] = f.Connections
			}
		}
		return got
	}

	srv := httptest.NewServer(livepage.Handler(a, b))
	defer srv.Close()
	var p livepage.Page
	pgtest.WaitFor(t, 10*time.Second, "the server view", func() bool {
		p = getPage(t, srv.URL)
		return p.Pools[0].Server != nil && p.Pools[1].Server != nil
	})
	for _, pp := range p.Pools {
		assert.Equal(t, want, counts(pp.Server.Fleet), "pool %s: fleet", pp.Pool)
		assert.NotZero(t, pp.Server.MaxConnections, "pool %s: limits %+v", pp.Pool, pp.Server)
		assert.Equal(t, pp.Server.MaxConnections-pp.Server.ReservedConnections, pp.Server.Available, "pool %s: limits %+v", pp.Pool, pp.Server)
	}
	assert.Equal(t, appA, poolNamed(t, p, "fleet-a").Server.ApplicationName, "fleet-a's application_name")
	html, _ := get(t, srv.URL)
	assert.Contains(t, html, `<tr class="self"><td class="mono">`+appA+`</td><td class="n">3</td>`, "the page shows fleet-a's row, marked as this pool's")

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	capa, err := pgxleak.CheckCapacity(ctx, a, 1)
	require.NoError(t, err)
	// CheckCapacity's query runs on one of fleet-a's idle connections.
	assert.Equal(t, want, counts(capa.Fleet), "CheckCapacity's fleet")
	assert.Equal(t, appA, capa.ApplicationName, "CheckCapacity's application_name")
}

// TestHandlerServerViewOff: with WithoutServerView (or behind PgBouncer)
// the page does not read the server at all, and says why.
func TestHandlerServerViewOff(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithoutServerView(), pgxleak.WithPoolName("view-off"))
	require.NoError(t, db.PingContext(t.Context()))
	srv := httptest.NewServer(livepage.Handler(db))
	defer srv.Close()
	assert.Nil(t, getPage(t, srv.URL).Pools[0].Server, "no server view")
	html, _ := get(t, srv.URL)
	assert.Contains(t, html, "Server view unavailable: server view off", "the page says the server view is off")
	var n int
	require.NoError(t, db.QueryRowContext(t.Context(), "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgxleak side connection' AND datname = current_database()").Scan(&n))
	assert.Zero(t, n, "side connections to this database")
}

// TestHandlerSettingsFollowSetters: the page's settings are the limits in
// force, read back from database/sql: a db.Set… call after Open shows, and
// the jitter shows as none once the lifetime is no longer Open's.
func TestHandlerSettingsFollowSetters(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(db *sql.DB)
		want pgxleak.Settings // the pool limits only
		life string           // the lifetime's row on the HTML page
	}{
		{"as opened", func(*sql.DB) {},
			pgxleak.Settings{MaxOpen: 6, MaxIdle: 4, MinIdle: 3, ConnMaxLifetime: time.Hour, ConnMaxLifetimeJitter: 6 * time.Minute, ConnMaxIdleTime: time.Minute},
			"1h0m0s, jitter 6m0s"},
		{"SetMaxOpenConns", func(db *sql.DB) { db.SetMaxOpenConns(2) }, // database/sql lowers max idle to match
			pgxleak.Settings{MaxOpen: 2, MaxIdle: 2, MinIdle: 2, ConnMaxLifetime: time.Hour, ConnMaxLifetimeJitter: 6 * time.Minute, ConnMaxIdleTime: time.Minute},
			"1h0m0s, jitter 6m0s"},
		{"SetMaxIdleConns", func(db *sql.DB) { db.SetMaxIdleConns(1) },
			pgxleak.Settings{MaxOpen: 6, MaxIdle: 1, MinIdle: 1, ConnMaxLifetime: time.Hour, ConnMaxLifetimeJitter: 6 * time.Minute, ConnMaxIdleTime: time.Minute},
			"1h0m0s, jitter 6m0s"},
		{"SetConnMaxLifetime(0)", func(db *sql.DB) { db.SetConnMaxLifetime(0) },
			pgxleak.Settings{MaxOpen: 6, MaxIdle: 4, MinIdle: 3, ConnMaxIdleTime: time.Minute},
			"forever, jitter none"},
		{"SetConnMaxLifetime", func(db *sql.DB) { db.SetConnMaxLifetime(time.Minute) },
			pgxleak.Settings{MaxOpen: 6, MaxIdle: 4, MinIdle: 3, ConnMaxLifetime: time.Minute, ConnMaxIdleTime: time.Minute},
			"1m0s, jitter none"},
		{"SetConnMaxIdleTime(0)", func(db *sql.DB) { db.SetConnMaxIdleTime(0) },
			pgxleak.Settings{MaxOpen: 6, MaxIdle: 4, MinIdle: 3, ConnMaxLifetime: time.Hour, ConnMaxLifetimeJitter: 6 * time.Minute},
			"1h0m0s, jitter 6m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, _ := openTest(t, pgxleak.WithPoolName("page-setters"), pgxleak.WithMaxOpenConns(6),
				pgxleak.WithMinIdleConns(3), pgxleak.WithConnMaxLifetime(time.Hour))
			// The two limits Open takes no option for, as a user sets
			// them; the jitter is a tenth of the lifetime.
			db.SetMaxIdleConns(4)
			db.SetConnMaxIdleTime(time.Minute)
			tc.set(db)
			srv := httptest.NewServer(livepage.Handler(db))
			defer srv.Close()
			s := poolNamed(t, getPage(t, srv.URL), "page-setters").Settings
			got := pgxleak.Settings{MaxOpen: s.MaxOpen, MaxIdle: s.MaxIdle, MinIdle: s.MinIdle, ConnMaxLifetime: s.ConnMaxLifetime,
				ConnMaxLifetimeJitter: s.ConnMaxLifetimeJitter, ConnMaxIdleTime: s.ConnMaxIdleTime, LimitsFromOpen: s.LimitsFromOpen}
			assert.Equal(t, tc.want, got)
			html, _ := get(t, srv.URL)
			for _, row := range []string{
				fmt.Sprintf("<dt>max open connections</dt><dd>%d</dd>", tc.want.MaxOpen),
				fmt.Sprintf("<dt>max idle connections</dt><dd>%d</dd>", tc.want.MaxIdle),
				fmt.Sprintf("<dt>min idle connections</dt><dd>%d</dd>", tc.want.MinIdle),
				"<dt>connection max lifetime</dt><dd>" + tc.life + "</dd>",
			} {
				assert.Contains(t, html, row)
			}
		})
	}
}

// TestHandlerWaitsInProgress: three callers stuck behind the pool's only
// connection are on the page while they wait (database/sql counts their
// time only when it ends): in the summary, in the plots, and in a banner
// once past the slow-wait threshold, naming the line they wait at.
func TestHandlerWaitsInProgress(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithPoolName("page-waits"), pgxleak.WithMaxOpenConns(1),
		pgxleak.WithWaitSampleInterval(50*time.Millisecond), pgxleak.WithSlowWaitThreshold(200*time.Millisecond))
	srv := httptest.NewServer(livepage.Handler(db))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	held, err := db.Conn(ctx)
	require.NoError(t, err)
	var wg sync.WaitGroup
	at := make(chan site, 3)
	for range 3 {
		wg.Go(func() {
			at <- lineBelow()
			_, _ = db.ExecContext(ctx, "SELECT 1")
		})
	}
	waitAt := <-at
	var pp livepage.PoolPage
	pgtest.WaitFor(t, 10*time.Second, "the sampler seeing three waiters past the threshold", func() bool {
		pp = poolNamed(t, getPage(t, srv.URL), "page-waits")
		h := pp.History
		return pp.Stats.Waiting == 3 && pp.Stats.LongestWait >= 400*time.Millisecond &&
			len(h) > 0 && h[len(h)-1].Waiting == 3 && h[len(h)-1].LongestWait >= 200*time.Millisecond
	})
	assert.Zero(t, pp.Stats.WaitDuration, "no wait has ended, so database/sql counts no wait time")
	require.Len(t, pp.Waiters, 3)
	for _, w := range pp.Waiters {
		assert.Positive(t, w.Waited)
	}
	html, _ := get(t, srv.URL)
	for _, want := range []string{
		"3 waits for a connection so far (0s in all, counted as they end), 3 waiting now, the longest for at least ",
		`class="alert">SLOW WAITS: 3 goroutines waiting for a connection now, the longest for at least `,
		waitAt.Short() + " (livepage_test.TestHandlerWaitsInProgress.func1) ×3.",
		"waiting now: 3</li>",
	} {
		assert.Truef(t, strings.Contains(html, want), "the page lacks %q", want)
	}
	assert.False(t, strings.Contains(html, "longest wait now: 0</li>"), "the wait-time plot stays at 0")

	require.NoError(t, held.Close())
	wg.Wait()
}

// TestHandlerLockStuck: a connection blocked on a leaked transaction's row
// lock. The page's banner names the leak's line; each holder row names
// the PID it blocks or is blocked by.
func TestHandlerLockStuck(t *testing.T) {
	db, dsn := openTest(t, pgxleak.WithPoolName("page-locks"))
	pgtest.Exec(t, dsn, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
	srv := httptest.NewServer(livepage.Handler(db))
	defer srv.Close()
	var leak struct {
		tx *sql.Tx
		at site
	}
	// leaks a transaction holding the row, from a goroutine that exits
	leak.tx = leaktest.LeakTx(t, "SELECT id FROM t WHERE id = 1 FOR UPDATE", func() (*sql.Tx, error) {
		leak.at = lineBelow()
		return db.Begin()
	})
	defer leak.tx.Rollback()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	blockedAt := make(chan site, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		blockedAt <- lineBelow()
		_, _ = db.ExecContext(ctx, "UPDATE t SET id = 1 WHERE id = 1") // blocks on the leak's lock
	}()
	at := <-blockedAt
	var html string
	pgtest.WaitFor(t, 10*time.Second, "the lock-wait banner", func() bool {
		html, _ = get(t, srv.URL)
		return strings.Contains(html, `class="alert">LOCK WAIT: `)
	})
	pp := poolNamed(t, getPage(t, srv.URL), "page-locks")
	var leakPID, blockedPID uint32
	for _, c := range pp.Checkouts {
		switch c.Culprit.Line {
		case leak.at.Line:
			leakPID = c.BackendPID
		case at.Line:
			blockedPID = c.BackendPID
		}
	}
	require.NotZero(t, leakPID)
	require.NotZero(t, blockedPID)
	for _, want := range []string{
		fmt.Sprintf(`class="alert">LOCK WAIT: the connection checked out at %s (livepage_test.TestHandlerLockStuck.func1) (PID %d, idle in transaction) holds locks that 1 other connection of this pool wait for (PID %d, checked out at %s`,
			leak.at.Short(), leakPID, blockedPID, at.Short()),
		fmt.Sprintf("fix %s (livepage_test.TestHandlerLockStuck.func1).", leak.at.Short()),
		fmt.Sprintf("idle in transaction, blocking PID %d (checked out at %s", blockedPID, at.Short()),
		fmt.Sprintf("blocked by PID %d (checked out at %s", leakPID, leak.at.Short()),
	} {
		assert.Truef(t, strings.Contains(html, want), "the page lacks %q", want)
	}
	require.NoError(t, leak.tx.Rollback())
	<-done
}
