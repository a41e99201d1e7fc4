package livepage_test

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/pgxleak/pgxleak/livepage"
)

// chromium finds a Chromium to drive: $PGXLEAK_CHROMIUM, or Debian's
// chromium package. Without one the browser test fails, unless
// PGXLEAK_SKIP names chromium (pgtest.Missing).
func chromium(t *testing.T) string {
	t.Helper()
	names := []string{os.Getenv("PGXLEAK_CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}
	for _, n := range names {
		if n == "" {
			continue
		}
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	pgtest.Missing(t, pgtest.DepChromium, errors.New("no $PGXLEAK_CHROMIUM, chromium, chromium-browser or google-chrome on PATH: the live page was not tested in a real browser"))
	return ""
}

// artifactDir is where test artefacts (the page's screenshot) go:
// $PGXLEAK_ARTIFACTS, or a directory under the system's temporary one.
// Nothing there is committed.
func artifactDir(t *testing.T) string {
	dir := os.Getenv("PGXLEAK_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "pgxleak-artifacts")
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

// TestHandlerInBrowser loads the page in headless Chromium, from a test
// server with a leaking pool and a stalled one, takes a screenshot, and
// checks the DOM after the page's script ran: the holder's culprit is
// there, every plot's polyline has one point per sample, the script ran
// (the content security policy let it), and nothing was logged to the
// console.
func TestHandlerInBrowser(t *testing.T) {
	bin := chromium(t)

	leaky, _ := openTest(t, pgxleak.WithPoolName("browser-leak"), pgxleak.WithWaitSampleInterval(50*time.Millisecond))
	at := lineBelow()
	rows, err := leaky.QueryContext(t.Context(), "SELECT 1") // leaked until the test ends
	require.NoError(t, err)
	defer rows.Close()

	stalled, _ := openTest(t, pgxleak.WithPoolName("browser-stalled"), pgxleak.WithMaxOpenConns(1), pgxleak.WithWaitSampleInterval(50*time.Millisecond))
	held, err := stalled.Conn(t.Context())
	require.NoError(t, err)
	defer held.Close()
	waitCtx, stopWaiting := context.WithCancel(t.Context())
	waiterDone := make(chan struct{})
	go func() { // waits for the held connection until the test ends
		defer close(waiterDone)
		if c, err := stalled.Conn(waitCtx); err == nil {
			c.Close()
		}
	}()
	defer func() { stopWaiting(); <-waiterDone }()

	srv := httptest.NewServer(livepage.Handler(leaky, stalled))
	defer srv.Close()
	pgtest.WaitFor(t, 10*time.Second, "3 samples in each pool, and the waiter seen waiting past the slow-wait threshold", func() bool {
		p := getPage(t, srv.URL)
		return len(p.Pools) == 2 && len(p.Pools[0].History) >= 3 && len(p.Pools[1].History) >= 3 && stalled.Stats().WaitCount == 1 &&
			p.Pools[1].Stats.Waiting == 1 && p.Pools[1].Stats.LongestWait >= p.Pools[1].Settings.SlowWaitThreshold
	})

	profile, err := os.MkdirTemp("", "pgxleak-chromium-")
	require.NoError(t, err)
	defer os.RemoveAll(profile)
	shot := filepath.Join(artifactDir(t), "pgxleak-page.png")
	_ = os.Remove(shot)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir="+profile,
		"--enable-logging=stderr", "--v=0", // console messages go to stderr as INFO:CONSOLE lines
		"--window-size=1400,2600", "--screenshot="+shot, "--dump-dom", srv.URL+"/")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	require.NoError(t, cmd.Run(), "chromium\n%s", stderr.String())
	t.Logf("chromium took %v; screenshot: %s", time.Since(start).Round(time.Millisecond), shot)
	after := getPage(t, srv.URL)
	dom := stdout.String()

	for _, line := range strings.Split(stderr.String(), "\n") {
		assert.NotContains(t, line, ":CONSOLE", "the page logged to the console")
	}
	assert.Contains(t, dom, `<span class="mono culprit">`+at.Short(), "the DOM shows the holder's culprit")
	assert.Contains(t, dom, "Live: refreshed every 5 s.", "the page's script did not run")
	for _, want := range []string{"Pool browser-leak", "Pool browser-stalled", "1 of 1 connections in use",
		"1 waiting now, the longest for at least ", "SLOW WAITS: 1 goroutine waiting for a connection now"} {
		assert.Contains(t, dom, want)
	}
	svgs := regexp.MustCompile(`(?s)<svg class="plot"[^>]*data-points="(\d+)">(.*?)</svg>`).FindAllStringSubmatch(dom, -1)
	assert.Len(t, svgs, 10, "plots in the DOM: 5 per pool")
	maxSamples := max(len(after.Pools[0].History), len(after.Pools[1].History))
	for _, s := range svgs {
		n, _ := strconv.Atoi(s[1])
		assert.True(t, n >= 3 && n <= maxSamples, "a plot of %d samples; want 3 to %d", n, maxSamples)
		lines := regexp.MustCompile(`<polyline class="s\d" points="([^"]*)"`).FindAllStringSubmatch(s[2], -1)
		assert.NotEmpty(t, lines, "a plot without a polyline")
		for _, l := range lines {
			assert.Len(t, strings.Fields(l[1]), n, "points in a polyline of a plot of %d samples", n)
		}
	}
	if fi, err := os.Stat(shot); assert.NoError(t, err, "no screenshot") {
		assert.Positive(t, fi.Size(), "an empty screenshot")
	}
}
