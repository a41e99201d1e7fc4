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
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/pgxleak/pgxleak/livepage"
)

// get fetches url and returns its body, failing t on any error or a
// status other than 200.
func get(t testing.TB, url string) (string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	return string(body), resp.Header
}

// getPage fetches the JSON, decoding it strictly into the documented
// struct: a field the struct does not have fails the test.
func getPage(t testing.TB, url string) livepage.Page {
	t.Helper()
	body, h := get(t, url+"?format=json")
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	var p livepage.Page
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("decoding the JSON into livepage.Page: %v\n%s", err, body)
	}
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
	t.Fatalf("no pool %q on the page", name)
	return livepage.PoolPage{}
}

// TestHandlerLeakCulprit: a live leak's culprit line is in the HTML and in
// the JSON, which round-trips through the documented struct.
func TestHandlerLeakCulprit(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithPoolName("page-leak"), pgxleak.WithWaitSampleInterval(20*time.Millisecond),
		pgxleak.WithIdleInTransactionTimeout(90*time.Second))
	at := lineBelow()
	rows, err := db.QueryContext(t.Context(), "SELECT 1") // leaked until the test ends
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()

	srv := httptest.NewServer(livepage.Handler(db))
	defer srv.Close()

	html, h := get(t, srv.URL)
	if ct := h.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	if !strings.Contains(html, at.short()) {
		t.Errorf("the page lacks the culprit %s", at.short())
	}
	if !strings.Contains(html, "Pool page-leak") {
		t.Error("the page lacks the pool's name")
	}
	if !strings.Contains(html, "<dt>idle-in-transaction timeout</dt><dd>1m30s</dd>") || !strings.Contains(html, "<dt>server view (pg_stat_activity)</dt><dd>true</dd>") {
		t.Error("the page's settings lack the server view or the idle-in-transaction timeout")
	}

	p := getPage(t, srv.URL)
	pp := poolNamed(t, p, "page-leak")
	if len(pp.Checkouts) != 1 || pp.Checkouts[0].Culprit.Line != at.line || !strings.HasSuffix(pp.Checkouts[0].Culprit.File, "handler_test.go") {
		t.Fatalf("checkouts %+v, want one at %s", pp.Checkouts, at)
	}
	if pp.Checkouts[0].LastStatement != "SELECT 1" || pp.Stats.CheckedOut != 1 {
		t.Errorf("statement %q, checked out %d", pp.Checkouts[0].LastStatement, pp.Stats.CheckedOut)
	}
	if pp.Settings.MaxOpen != defaultMaxOpen() || !pp.Settings.Tuned || pp.SampleInterval != 20*time.Millisecond ||
		!pp.Settings.ServerView || pp.Settings.IdleInTransactionTimeout != 90*time.Second {
		t.Errorf("settings %+v, interval %v", pp.Settings, pp.SampleInterval)
	}
	// Round trip: what was decoded encodes to the same JSON.
	body, _ := get(t, srv.URL+"?format=json")
	var again livepage.Page
	if err := json.Unmarshal([]byte(body), &again); err != nil {
		t.Fatal(err)
	}
	var b1, b2 bytes.Buffer
	_ = json.NewEncoder(&b1).Encode(again)
	var raw any
	_ = json.Unmarshal([]byte(body), &raw)
	var back any
	_ = json.Unmarshal(b1.Bytes(), &back)
	_ = json.NewEncoder(&b2).Encode(raw)
	var b3 bytes.Buffer
	_ = json.NewEncoder(&b3).Encode(back)
	if b2.String() != b3.String() {
		t.Errorf("the JSON does not survive a round trip through livepage.Page:\n%s\n%s", b2.String(), b3.String())
	}
}

// TestHandlerPlotPoints: every polyline has one point per sample.
func TestHandlerPlotPoints(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithPoolName("page-plot"), pgxleak.WithWaitSampleInterval(10*time.Millisecond))
	srv := httptest.NewServer(livepage.Handler(db))
	defer srv.Close()
	for range 5 {
		if _, err := db.ExecContext(t.Context(), "SELECT 1"); err != nil {
			t.Fatal(err)
		}
	}
	var before livepage.PoolPage
	pgtest.WaitFor(t, 10*time.Second, "5 samples", func() bool {
		before = getPage(t, srv.URL).Pools[0]
		return len(before.History) >= 5
	})
	html, _ := get(t, srv.URL)
	after := getPage(t, srv.URL).Pools[0]

	svgs := regexp.MustCompile(`(?s)<svg class="plot"[^>]*data-points="(\d+)">(.*?)</svg>`).FindAllStringSubmatch(html, -1)
	if len(svgs) != 5 {
		t.Fatalf("%d plots, want 5", len(svgs))
	}
	for _, s := range svgs {
		n, _ := strconv.Atoi(s[1])
		if n < len(before.History) || n > len(after.History) {
			t.Errorf("plot of %d samples; the history had %d before and %d after", n, len(before.History), len(after.History))
		}
		lines := regexp.MustCompile(`<polyline class="s\d" points="([^"]*)"`).FindAllStringSubmatch(s[2], -1)
		if len(lines) == 0 {
			t.Errorf("a plot without a polyline: %s", s[2])
		}
		for _, l := range lines {
			if got := len(strings.Fields(l[1])); got != n {
				t.Errorf("polyline with %d points, want %d (one per sample)", got, n)
			}
		}
	}
	var sum uint64
	for _, s := range after.History {
		sum += s.Checkouts
	}
	if last := after.History[len(after.History)-1]; sum < 5 || last.MaxOpen != defaultMaxOpen() {
		t.Errorf("history: %d checkouts in all (want at least 5), last sample %+v", sum, last)
	}
}

// TestHandlerEscapes: statement text and pool names are user input; a
// <script> in them is shown as text.
func TestHandlerEscapes(t *testing.T) {
	const evil = `<script>alert("x")</script>`
	db, _ := openTest(t, pgxleak.WithPoolName("<b>"+evil))
	rows, err := db.QueryContext(t.Context(), "SELECT '"+evil+"'")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	srv := httptest.NewServer(livepage.Handler(db))
	defer srv.Close()
	for _, q := range []string{"", "?fragment=pools"} {
		html, _ := get(t, srv.URL+q)
		if strings.Contains(html, "<script>alert") || strings.Contains(html, "<b>") {
			t.Errorf("%q: user text rendered as markup", q)
		}
		if !strings.Contains(html, "SELECT &#39;&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&#39;") {
			t.Errorf("%q: the statement is not shown as text", q)
		}
	}
}

// TestHandlerMethods: only GET and HEAD.
func TestHandlerMethods(t *testing.T) {
	srv := httptest.NewServer(livepage.Handler())
	defer srv.Close()
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodOptions} {
		req, _ := http.NewRequest(m, srv.URL, strings.NewReader("x"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: %s, Allow %q; want 405 with Allow: GET, HEAD", m, resp.Status, resp.Header.Get("Allow"))
		}
	}
	resp, err := http.Head(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD: %s", resp.Status)
	}
}

// TestHandlerPools: the pools given, by name; a closed pool goes.
func TestHandlerPools(t *testing.T) {
	a, _ := openTest(t, pgxleak.WithPoolName("page-pools-b"))
	b, _ := openTest(t, pgxleak.WithPoolName("page-pools-a"))
	srv := httptest.NewServer(livepage.Handler(a, b))
	defer srv.Close()
	html, _ := get(t, srv.URL)
	ia, ib := strings.Index(html, "Pool page-pools-a"), strings.Index(html, "Pool page-pools-b")
	if ia < 0 || ib < 0 || ib < ia {
		t.Errorf("pools not both listed by name, in order (a at %d, b at %d)", ia, ib)
	}
	p := getPage(t, srv.URL)
	poolNamed(t, p, "page-pools-a")
	poolNamed(t, p, "page-pools-b")

	one := httptest.NewServer(livepage.Handler(a))
	defer one.Close()
	if p := getPage(t, one.URL); len(p.Pools) != 1 || p.Pools[0].Pool != "page-pools-b" {
		t.Errorf("Handler(a) shows %d pools", len(p.Pools))
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if html, _ := get(t, srv.URL); strings.Contains(html, "Pool page-pools-a") {
		t.Error("a closed pool is still listed")
	}
	other, err := sql.Open("pgx", "postgres://nobody@127.0.0.1:1/none") // never connects
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	plain := httptest.NewServer(livepage.Handler(other))
	defer plain.Close()
	if html, _ := get(t, plain.URL); !strings.Contains(html, "not opened by pgxleak") {
		t.Error("a *sql.DB not opened through pgxleak is not explained")
	}
}

// TestHandlerFleet: two pools with different names on the same server are
// two application_names, with their connection counts, on the page and in
// CheckCapacity.
func TestHandlerFleet(t *testing.T) {
	// pgtest's DSN names its connections; pgxleak would keep that name.
	cfg, err := pgx.ParseConfig(pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	dsn := fmt.Sprintf("host=%s port=%d user=%s password='%s' dbname=%s sslmode=disable",
		cfg.Host, cfg.Port, cfg.User, strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(cfg.Password), cfg.Database)
	open := func(name string, n int) (*sql.DB, string) {
		db, err := pgxleak.Open("pgx", dsn, pgxleak.WithPoolName(name), pgxleak.WithLogger(quiet))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		for range n {
			c, err := db.Conn(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
		}
		var app string
		if err := db.QueryRowContext(t.Context(), "SELECT current_setting('application_name')").Scan(&app); err != nil {
			t.Fatal(err)
		}
		return db, app
	}
	a, appA := open("fleet-a", 2)
	b, appB := open("fleet-b", 3)
	if appA == appB || !strings.HasSuffix(appA, "/fleet-a") {
		t.Fatalf("application_names %q and %q", appA, appB)
	}
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
		if got := counts(pp.Server.Fleet); len(got) != 2 || got[appA] != 3 || got[appB] != 4 {
			t.Errorf("pool %s: fleet %v, want %v", pp.Pool, got, want)
		}
		if pp.Server.MaxConnections == 0 || pp.Server.Available != pp.Server.MaxConnections-pp.Server.ReservedConnections {
			t.Errorf("pool %s: limits %+v", pp.Pool, pp.Server)
		}
	}
	if got := poolNamed(t, p, "fleet-a").Server.ApplicationName; got != appA {
		t.Errorf("fleet-a's application_name %q, want %q", got, appA)
	}
	html, _ := get(t, srv.URL)
	if !strings.Contains(html, `<tr class="self"><td class="mono">`+appA+`</td><td class="n">3</td>`) {
		t.Error("the page does not show fleet-a's row, marked as this pool's")
	}

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	capa, err := pgxleak.CheckCapacity(ctx, a, 1)
	if err != nil {
		t.Fatal(err)
	}
	// CheckCapacity's query runs on one of fleet-a's idle connections.
	if got := counts(capa.Fleet); got[appA] != 3 || got[appB] != 4 || capa.ApplicationName != appA {
		t.Errorf("CheckCapacity: fleet %v, application_name %q", got, capa.ApplicationName)
	}
}

// TestHandlerServerViewOff: with WithoutServerView (or behind PgBouncer)
// the page does not read the server at all, and says why.
func TestHandlerServerViewOff(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithoutServerView(), pgxleak.WithPoolName("view-off"))
	if err := db.PingContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(livepage.Handler(db))
	defer srv.Close()
	if s := getPage(t, srv.URL).Pools[0].Server; s != nil {
		t.Errorf("server view %+v: want none", s)
	}
	if html, _ := get(t, srv.URL); !strings.Contains(html, "Server view unavailable: server view off") {
		t.Error("the page does not say the server view is off")
	}
	var n int
	if err := db.QueryRowContext(t.Context(), "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgxleak side connection' AND datname = current_database()").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d side connections to this database, want none", n)
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
		`class="alert">SLOW WAITS: 3 goroutine(s) waiting for a connection now, the longest for at least `,
		waitAt.short() + " (livepage_test.TestHandlerWaitsInProgress.func1) ×3.",
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
	type leaked struct {
		tx *sql.Tx
		at site
	}
	got := make(chan leaked)
	go func() { // leaks a transaction holding the row, and exits
		var l leaked
		var err error
		l.at = lineBelow()
		l.tx, err = db.Begin()
		if err == nil {
			_, err = l.tx.Exec("SELECT id FROM t WHERE id = 1 FOR UPDATE")
		}
		assert.NoError(t, err)
		got <- l
	}()
	leak := <-got
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
		case leak.at.line:
			leakPID = c.BackendPID
		case at.line:
			blockedPID = c.BackendPID
		}
	}
	require.NotZero(t, leakPID)
	require.NotZero(t, blockedPID)
	for _, want := range []string{
		fmt.Sprintf(`class="alert">LOCK WAIT: the connection checked out at %s (livepage_test.TestHandlerLockStuck.func1) (PID %d, idle in transaction) holds locks that 1 other connection(s) of this pool wait for (PID %d, checked out at %s`,
			leak.at.short(), leakPID, blockedPID, at.short()),
		fmt.Sprintf("fix %s (livepage_test.TestHandlerLockStuck.func1).", leak.at.short()),
		fmt.Sprintf("idle in transaction, blocking PID %d (checked out at %s", blockedPID, at.short()),
		fmt.Sprintf("blocked by PID %d (checked out at %s", leakPID, leak.at.short()),
	} {
		assert.Truef(t, strings.Contains(html, want), "the page lacks %q", want)
	}
	require.NoError(t, leak.tx.Rollback())
	<-done
}
