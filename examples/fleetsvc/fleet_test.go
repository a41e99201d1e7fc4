package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// The fleet test's shape: instances of this service as separate
// processes, one leaking at the line marked "LEAK:" in main.go, one with
// a pool too small for its load, the rest healthy, each with one
// connection or two (the shared server has max_connections 100).
const (
	fleetSize   = 20
	leakyIndex  = 3
	smallIndex  = 7
	lockedIndex = 11              // deadlocks itself now and then
	fleetBudget = 4 * time.Minute // the whole test, processes included
)

func instanceID(i int) string { return fmt.Sprintf("inst-%02d", i) }

// TestPromtoolRules runs the alert rules' unit tests.
func TestPromtoolRules(t *testing.T) {
	promtool := lookTool(t, "promtool")
	dir := filepath.Join("..", "..", "deploy", "prometheus")
	for _, args := range [][]string{{"check", "rules", "pgxleak-rules.yml"}, {"test", "rules", "pgxleak-rules.test.yml"}} {
		cmd := exec.CommandContext(t.Context(), promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "promtool %s:\n%s", strings.Join(args, " "), out)
		require.Contains(t, string(out), "SUCCESS")
	}
}

// TestFleet starts the fleet and a real Prometheus scraping it every
// second, with the shipped rules (their for: durations scaled down), and
// asserts through PromQL over Prometheus's HTTP API that the leak alert
// names the leaking instance and its line, the undersized verdict names
// the undersized instance, no healthy instance is accused, and every
// dashboard query and rule expression returns data; and that the live
// page's fleet table, from pg_stat_activity, agrees with the metrics on
// the connections each instance holds.
func TestFleet(t *testing.T) {
	prometheus := lookTool(t, "prometheus")
	// pgtest's DSN names its sessions; each instance must name its own.
	pc, err := pgx.ParseConfig(pgtest.NewDatabase(t))
	require.NoError(t, err)
	dsn := (&url.URL{Scheme: "postgres", User: url.UserPassword(pc.User, pc.Password),
		Host: net.JoinHostPort(pc.Host, strconv.Itoa(int(pc.Port))), Path: "/" + pc.Database, RawQuery: "sslmode=disable"}).String()
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), fleetBudget)
	defer cancel()
	dir := t.TempDir()

	bin := filepath.Join(dir, "fleetsvc")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build:\n%s", out)

	var addrs []string
	for i := 1; i <= fleetSize; i++ {
		args := []string{"-max-open", "2", "-workers", "1", "-hold", "2ms", "-pause", "100ms"}
		switch i {
		case leakyIndex:
			args = []string{"-max-open", "2", "-workers", "1", "-hold", "2ms", "-pause", "50ms",
				"-leak", "-leak-every", "5", "-leak-max", "2", "-leak-threshold", "1s"}
		case lockedIndex:
			args = []string{"-max-open", "1", "-workers", "1", "-deadlock", "-timeout", "2s", "-pause", "200ms"}
		case smallIndex:
			args = []string{"-max-open", "1", "-workers", "6", "-hold", "50ms", "-timeout", "100ms", "-pause", "1ms"}
		}
		addrs = append(addrs, startProcess(t, bin, dir, instanceID(i), dsn, args))
	}

	rules := scaledRules(t, dir)
	promAddr := freeAddr(t)
	var targets []string
	for _, a := range addrs {
		targets = append(targets, strconv.Quote(a))
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: fleetsvc
    static_configs:
      - targets: [%s]
`, rules, strings.Join(targets, ", "))
	cfgFile := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(cfg), 0o644))
	prom := exec.Command(prometheus, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	prom.Stdout, prom.Stderr = os.Stderr, os.Stderr
	require.NoError(t, prom.Start())
	stopOnCleanup(t, prom)
	api := &promAPI{base: "http://" + promAddr}
	pgtest.WaitFor(t, time.Minute, "Prometheus to be ready", func() bool {
		resp, err := http.Get(api.base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	leakLine := markedLine(t, "LEAK:")
	leaky, small, locked := instanceID(leakyIndex), instanceID(smallIndex), instanceID(lockedIndex)
	accused := map[string]bool{leaky: true, small: true, locked: true}

	// The leak alert names the leaking instance and the line.
	pgtest.WaitFor(t, 2*time.Minute, "the leak alert for "+leaky, func() bool {
		for _, a := range api.alerts(t) {
			if a.Labels["alertname"] == "PgxleakConnectionLeak" && a.State == "firing" &&
				a.Labels["service_instance_id"] == leaky && a.Labels["code_line_number"] == strconv.Itoa(leakLine) &&
				strings.HasSuffix(a.Labels["code_file_path"], "fleetsvc/main.go") {
				return true
			}
		}
		return false
	})
	// The undersized verdict names the undersized instance, and its alert
	// fires.
	pgtest.WaitFor(t, 2*time.Minute, "the undersized verdict and alert for "+small, func() bool {
		res := api.query(t, `pgxleak_pool_verdict{pgxleak_verdict="undersized"} == 1`)
		named := len(res) == 1 && res[0].Metric["service_instance_id"] == small
		for _, a := range api.alerts(t) {
			if named && a.Labels["alertname"] == "PgxleakPoolUndersized" && a.State == "firing" && a.Labels["service_instance_id"] == small {
				return true
			}
		}
		return false
	})
	pgtest.WaitFor(t, 2*time.Minute, "the deadlock alert for "+locked, func() bool {
		for _, a := range api.alerts(t) {
			if a.Labels["alertname"] == "PgxleakDeadlock" && a.State == "firing" && a.Labels["service_instance_id"] == locked &&
				a.Labels["code_line_number"] == strconv.Itoa(markedLine(t, "HELD:")) {
				return true
			}
		}
		return false
	})
	// No healthy instance is accused: by no alert, and by no verdict.
	for _, a := range api.alerts(t) {
		if id := a.Labels["service_instance_id"]; id != "" {
			assert.True(t, accused[id], "alert %s accuses healthy instance %s: %v", a.Labels["alertname"], id, a.Labels)
		}
	}
	for _, r := range api.query(t, `pgxleak_pool_verdict{pgxleak_verdict!="healthy"} == 1`) {
		assert.True(t, accused[r.Metric["service_instance_id"]], "verdict %v", r.Metric)
	}
	healthy := api.query(t, `pgxleak_pool_verdict{pgxleak_verdict="healthy"} == 1`)
	assert.GreaterOrEqual(t, len(healthy), fleetSize-3, "every other instance is healthy")
	leakVerdict := api.query(t, `pgxleak_pool_verdict{pgxleak_verdict="leaking"} == 1`)
	if assert.Len(t, leakVerdict, 1) {
		assert.Equal(t, leaky, leakVerdict[0].Metric["service_instance_id"])
	}

	// Every dashboard query and every rule expression returns data.
	for _, q := range dashboardQueries(t) {
		assert.NotEmpty(t, api.query(t, q), "dashboard query returns no data: %s", q)
	}
	for _, r := range ruleExprs(t) {
		assert.NotEmpty(t, api.query(t, r), "rule expression (its threshold taken off) returns no data: %s", r)
	}

	// The live page's fleet table (pg_stat_activity, read by one
	// instance) agrees with each instance's own connection count.
	// The page's view is up to 5s old and a scrape up to 1s: its count
	// must lie within what the metric said over the last 15s.
	var lastDiff string
	pgtest.WaitFor(t, time.Minute, "the page's fleet table to agree with the metrics", func() bool {
		fleet := pageFleet(t, addrs[0])
		lo, hi := map[string]int{}, map[string]int{}
		for _, r := range api.query(t, `min_over_time(sum by (service_instance_id) (db_client_connection_count)[15s:1s])`) {
			lo[r.Metric["service_instance_id"]] = int(r.value())
		}
		for _, r := range api.query(t, `max_over_time(sum by (service_instance_id) (db_client_connection_count)[15s:1s])`) {
			hi[r.Metric["service_instance_id"]] = int(r.value())
		}
		var diff []string
		for i := 1; i <= fleetSize; i++ {
			id := instanceID(i)
			n, ok := fleet["fleetsvc/"+id+"/main"]
			if _, seen := hi[id]; !ok || !seen || n < lo[id] || n > hi[id] {
				diff = append(diff, fmt.Sprintf("%s: page %d (listed %v), metrics %d..%d", id, n, ok, lo[id], hi[id]))
			}
		}
		if d := strings.Join(diff, "; "); d != lastDiff {
			lastDiff = d
			t.Logf("page vs metrics: %s", d)
		}
		return len(diff) == 0
	})
	assert.Equal(t, 2, pageFleet(t, addrs[0])["fleetsvc/"+leaky+"/main"], "the leaking instance holds its two leaked connections")
	series := api.query(t, fmt.Sprintf(`count({service_instance_id=%q})`, instanceID(1)))
	t.Logf("fleet of %d processes: leak alert, undersized verdict and agreement in %s; %v series per healthy instance",
		fleetSize, time.Since(start).Round(time.Second), series[0].Value[1])
}

// startProcess starts one instance and returns its address; it is
// stopped (SIGTERM, then SIGKILL) when t ends.
func startProcess(t *testing.T, bin, dir, id, dsn string, args []string) string {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0", "-dsn", dsn}, args...)...)
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME=fleetsvc", "OTEL_RESOURCE_ATTRIBUTES=service.instance.id="+id)
	logFile, err := os.Create(filepath.Join(dir, id+".log"))
	require.NoError(t, err)
	t.Cleanup(func() { logFile.Close() })
	cmd.Stderr = logFile
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	stopOnCleanup(t, cmd)
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stdout)
		if s.Scan() {
			line <- s.Text()
		}
		close(line)
		for s.Scan() { // drain until the process exits
		}
	}()
	select {
	case l, ok := <-line:
		require.True(t, ok, "%s exited before serving; see %s.log", id, id)
		addr, found := strings.CutPrefix(l, "listening on http://")
		require.True(t, found, "%s said %q", id, l)
		return addr
	case <-time.After(time.Minute):
		require.Failf(t, "did not start", "%s did not start within a minute", id)
	}
	return ""
}

// stopOnCleanup stops cmd when t ends: SIGTERM, then SIGKILL after 10s.
func stopOnCleanup(t *testing.T, cmd *exec.Cmd) {
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
}

// lookTool finds a binary of Debian's prometheus package, or ends t as
// pgtest.Missing says.
func lookTool(t *testing.T, name string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		pgtest.Missing(t, pgtest.DepPrometheus, err)
	}
	return p
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// markedLine returns the line of main.go that carries marker.
func markedLine(t *testing.T, marker string) int {
	src, err := os.ReadFile("main.go")
	require.NoError(t, err)
	for i, l := range strings.Split(string(src), "\n") {
		if strings.Contains(l, "// "+marker) {
			return i + 1
		}
	}
	require.Failf(t, "no marker", "no %q in main.go", marker)
	return 0
}

var forRE = regexp.MustCompile(`(?m)^(\s+for:\s*)\S+$`)

// scaledRules writes the shipped rules with every for: at 3s.
func scaledRules(t *testing.T, dir string) string {
	src, err := os.ReadFile(filepath.Join("..", "..", "deploy", "prometheus", "pgxleak-rules.yml"))
	require.NoError(t, err)
	p := filepath.Join(dir, "rules.yml")
	require.NoError(t, os.WriteFile(p, forRE.ReplaceAll(src, []byte("${1}3s")), 0o644))
	return p
}

// thresholdRE is an expression's final comparison with a number.
var thresholdRE = regexp.MustCompile(`(?s)^(.*?)\s*(>|>=|==|<|<=|!=)\s*[0-9.]+\s*$`)

// ruleExprs returns every rule's expression with its final threshold
// taken off: the signal, which must have data whether the alert fires or
// not.
func ruleExprs(t *testing.T) []string {
	src, err := os.ReadFile(filepath.Join("..", "..", "deploy", "prometheus", "pgxleak-rules.yml"))
	require.NoError(t, err)
	var out []string
	// The rules file is YAML; its expressions are the "expr:" values,
	// inline or as literal blocks.
	lines := strings.Split(string(src), "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		e, ok := strings.CutPrefix(l, "expr:")
		if !ok {
			continue
		}
		e = strings.TrimSpace(e)
		if e == "|" {
			var b []string
			for i+1 < len(lines) && (strings.HasPrefix(lines[i+1], "          ") || strings.TrimSpace(lines[i+1]) == "") {
				i++
				b = append(b, lines[i])
			}
			e = strings.Join(b, "\n")
		}
		if m := thresholdRE.FindStringSubmatch(e); m != nil {
			e = m[1]
		}
		out = append(out, strings.TrimSpace(e))
	}
	require.Len(t, out, 5)
	return out
}

// dashboardQueries returns every panel's queries.
func dashboardQueries(t *testing.T) []string {
	src, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "pgxleak-fleet.json"))
	require.NoError(t, err)
	var d struct {
		Panels []struct {
			Targets []struct{ Expr string }
		}
	}
	require.NoError(t, json.Unmarshal(src, &d))
	var out []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out = append(out, tg.Expr)
		}
	}
	require.NotEmpty(t, out)
	return out
}

// pageFleet reads the live page's fleet table, as JSON, from one instance:
// connections per application_name.
func pageFleet(t *testing.T, addr string) map[string]int {
	resp, err := http.Get("http://" + addr + "/debug/pgxleak/?format=json")
	require.NoError(t, err)
	defer resp.Body.Close()
	var page struct {
		Pools []struct {
			Server struct {
				Fleet []struct {
					ApplicationName string `json:"application_name"`
					Connections     int    `json:"connections"`
				} `json:"fleet"`
			} `json:"server"`
		} `json:"pools"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&page))
	m := map[string]int{}
	for _, p := range page.Pools {
		for _, f := range p.Server.Fleet {
			m[f.ApplicationName] = f.Connections
		}
	}
	return m
}

// promAPI asks Prometheus's HTTP API.
type promAPI struct{ base string }

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s promSample) value() float64 {
	v, _ := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
	return v
}

type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

func (a *promAPI) get(t *testing.T, path string, into any) {
	t.Helper()
	resp, err := http.Get(a.base + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, "success", body.Status, "%s: %s", path, body.Error)
	require.NoError(t, json.Unmarshal(body.Data, into))
}

func (a *promAPI) query(t *testing.T, q string) []promSample {
	t.Helper()
	var data struct {
		Result []promSample `json:"result"`
	}
	a.get(t, "/api/v1/query?query="+url.QueryEscape(q), &data)
	return data.Result
}

func (a *promAPI) alerts(t *testing.T) []promAlert {
	t.Helper()
	var data struct {
		Alerts []promAlert `json:"alerts"`
	}
	a.get(t, "/api/v1/alerts", &data)
	return data.Alerts
}
