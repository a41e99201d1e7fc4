package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PgBouncer is a pgbouncer process that one test owns, listening on a free
// port of 127.0.0.1 in transaction pooling mode, in front of the shared test
// server (AdminDSN). Clients authenticate with trust; pgbouncer logs in to
// the server as the admin DSN's user.
type PgBouncer struct {
	port     int
	poolSize int
	dir      string
	version  string
	cmd      *exec.Cmd
	exited   chan struct{}
	output   *lockedBuffer
}

// lockedBuffer collects pgbouncer's output; exec's copying goroutine writes
// it while a failing start-up reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// BouncerOption configures NewPgBouncer.
type BouncerOption func(*bouncerConfig)

type bouncerConfig struct {
	poolSize      int
	maxClientConn int
}

// PoolSize sets default_pool_size: the most server connections pgbouncer
// opens for one database and user. Default 2.
func PoolSize(n int) BouncerOption { return func(c *bouncerConfig) { c.poolSize = n } }

// MaxClientConn sets max_client_conn: the most client connections pgbouncer
// accepts. Default 50.
func MaxClientConn(n int) BouncerOption { return func(c *bouncerConfig) { c.maxClientConn = n } }

// NewPgBouncer starts pgbouncer for t in transaction pooling mode in front of
// the shared server, and stops it when t ends. Without a pgbouncer binary it
// ends t as Missing says: a failure, unless PGXLEAK_SKIP names pgbouncer.
// When running as root, pgbouncer (which refuses to run as root) runs as
// the user nobody.
func NewPgBouncer(t testing.TB, opts ...BouncerOption) *PgBouncer {
	t.Helper()
	bin, err := findPgBouncer()
	if err != nil {
		Missing(t, DepPgBouncer, err)
	}
	admin := AdminDSN(t)
	cfg := bouncerConfig{poolSize: 2, maxClientConn: 50}
	for _, o := range opts {
		o(&cfg)
	}
	b, err := startPgBouncer(bin, admin, cfg)
	if err != nil {
		t.Fatalf("pgtest: starting pgbouncer: %v", err)
	}
	t.Cleanup(b.stop)
	return b
}

// Port returns the port pgbouncer listens on, on 127.0.0.1.
func (b *PgBouncer) Port() int { return b.port }

// PoolSize returns pgbouncer's default_pool_size.
func (b *PgBouncer) PoolSize() int { return b.poolSize }

// Version returns pgbouncer's version, e.g. "1.18.0".
func (b *PgBouncer) Version() string { return b.version }

// VersionAtLeast reports whether pgbouncer's version is at least
// major.minor.
func (b *PgBouncer) VersionAtLeast(major, minor int) bool {
	parts := strings.SplitN(b.version, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, _ := strconv.Atoi(parts[0])
	mi, _ := strconv.Atoi(parts[1])
	return ma > major || ma == major && mi >= minor
}

// DSN returns serverDSN (a DSN of the shared server, such as NewDatabase
// returns) pointed at pgbouncer instead: same user, database and
// parameters, pgbouncer's host and port.
func (b *PgBouncer) DSN(serverDSN string) string {
	if strings.HasPrefix(serverDSN, "postgres://") || strings.HasPrefix(serverDSN, "postgresql://") {
		if u, err := url.Parse(serverDSN); err == nil {
			u.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port))
			q := u.Query()
			q.Del("host")
			q.Del("port")
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	// key=value: later settings override earlier ones.
	return fmt.Sprintf("%s host=127.0.0.1 port=%d", serverDSN, b.port)
}

// ServerConnections returns how many backends of the shared server are
// connected to database dbname, as pg_stat_activity sees them: behind
// pgbouncer, the server connections it opened for that database.
func ServerConnections(t testing.TB, dbname string) int {
	t.Helper()
	return countBackends(t, AdminDSN(t), "datname = $1 AND backend_type = 'client backend'", dbname)
}

func findPgBouncer() (string, error) {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	if os.Getenv(hideLocalEnv) == "1" {
		return "", errors.New("no pgbouncer on PATH")
	}
	for _, p := range []string{"/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer", "/usr/local/bin/pgbouncer"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no pgbouncer on PATH, in /usr/sbin or in /usr/local")
}

var versionRE = regexp.MustCompile(`(?i)pgbouncer\s+(\d+\.\d+(?:\.\d+)?)`)

func startPgBouncer(bin, admin string, cfg bouncerConfig) (*PgBouncer, error) {
	up, err := pgx.ParseConfig(admin)
	if err != nil {
		return nil, fmt.Errorf("parsing the admin DSN: %w", err)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s --version: %w: %s", bin, err, out)
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("%s --version: no version in %q", bin, out)
	}
	cred, err := unprivileged()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgxleak-pgbouncer-")
	if err != nil {
		return nil, err
	}
	if err := chown(dir, cred); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	server := fmt.Sprintf("host=%s port=%d", up.Host, up.Port)
	if up.Password != "" {
		// The server wants a password: log in as the admin user whoever the
		// client is.
		server += fmt.Sprintf(" user=%s password=%s", iniQuote(up.User), iniQuote(up.Password))
	}
	ini := fmt.Sprintf(`[databases]
* = %s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
admin_users = %s
pool_mode = transaction
default_pool_size = %d
max_client_conn = %d
ignore_startup_parameters = extra_float_digits
logfile = %s
`, server, port, filepath.Join(dir, "userlist.txt"), up.User, cfg.poolSize, cfg.maxClientConn, filepath.Join(dir, "pgbouncer.log"))
	users := fmt.Sprintf("%q \"\"\n", up.User)
	for name, content := range map[string]string{"pgbouncer.ini": ini, "userlist.txt": users} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
		if err := chown(p, cred); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	}

	b := &PgBouncer{port: port, poolSize: cfg.poolSize, dir: dir, version: string(m[1]), exited: make(chan struct{}), output: &lockedBuffer{}}
	b.cmd = exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	if cred != nil {
		b.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	b.cmd.Dir = dir
	b.cmd.Stdout, b.cmd.Stderr = b.output, b.output
	if err := b.cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	go func() { _ = b.cmd.Wait(); close(b.exited) }()

	// Ready when the admin console answers.
	deadline := time.Now().Add(15 * time.Second)
	console := fmt.Sprintf("postgres://%s@127.0.0.1:%d/pgbouncer?sslmode=disable&default_query_exec_mode=simple_protocol", url.PathEscape(up.User), port)
	for {
		select {
		case <-b.exited:
			log := b.log()
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("pgbouncer exited at start-up: %s", log)
		default:
		}
		if err := pingConsole(console); err == nil {
			return b, nil
		} else if time.Now().After(deadline) {
			log := b.log()
			b.stop()
			return nil, fmt.Errorf("pgbouncer did not answer on port %d within 15s: %v\n%s", port, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pingConsole asks pgbouncer's admin console for its version; the console
// speaks only the simple protocol and knows only its own commands.
func pingConsole(dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.PgConn().Exec(ctx, "SHOW VERSION").ReadAll()
	return err
}

// log returns the end of pgbouncer's log file and its output, for error
// messages.
func (b *PgBouncer) log() string {
	data, _ := os.ReadFile(filepath.Join(b.dir, "pgbouncer.log"))
	out := string(data) + b.output.String()
	if len(out) > 4000 {
		out = "...\n" + out[len(out)-4000:]
	}
	return out
}

// stop shuts pgbouncer down (SIGTERM is its fast shutdown), killing it if
// it does not exit within 10s, and removes its directory.
func (b *PgBouncer) stop() {
	select {
	case <-b.exited:
	default:
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.exited:
		case <-time.After(10 * time.Second):
			_ = b.cmd.Process.Kill()
			<-b.exited
		}
	}
	_ = os.RemoveAll(b.dir)
}

// unprivileged returns the credentials of the user nobody when running as
// root, and nil otherwise.
func unprivileged() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		return nil, fmt.Errorf("running as root and no unprivileged user 'nobody' to run pgbouncer as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func chown(path string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	return os.Chown(path, int(cred.Uid), int(cred.Gid))
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// iniQuote quotes a value for a pgbouncer connection string.
func iniQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
