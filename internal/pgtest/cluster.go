package pgtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

// Cluster is a private PostgreSQL cluster that a test owns: it may stop,
// kill or restart it without disturbing any other test.
type Cluster struct {
	dir      string // data directory
	port     int
	bin      string
	cred     *syscall.Credential // the unprivileged user, when running as root
	settings map[string]string
	mu       sync.Mutex
	running  bool
}

// ClusterOption sets a server setting (postgresql.conf name and value),
// e.g. Setting("max_connections", "10").
type ClusterOption func(map[string]string)

// Setting sets a server configuration parameter for NewCluster.
func Setting(name, value string) ClusterOption {
	return func(m map[string]string) { m[name] = value }
}

// NewCluster starts a private cluster for t and stops and removes it when t
// ends. Without PostgreSQL binaries it fails the run, as the shared server
// does (see the package documentation).
func NewCluster(t testing.TB, opts ...ClusterOption) *Cluster {
	t.Helper()
	c, err := startCluster(opts)
	if err != nil {
		noServer(t, fmt.Errorf("cannot start a private cluster: %w", err))
	}
	t.Cleanup(c.stop)
	return c
}

// DSN returns a superuser DSN for the cluster's "postgres" database.
func (c *Cluster) DSN() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

// Port returns the TCP port the cluster listens on.
func (c *Cluster) Port() int { return c.port }

// Stop shuts the server down with the given pg_ctl mode: "fast" (roll back
// and disconnect clients) or "immediate" (like a crash).
func (c *Cluster) Stop(mode string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running {
		return nil
	}
	c.running = false
	return c.pgctl("stop", "-m", mode)
}

// Start starts a stopped server on the same port and data.
func (c *Cluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		return nil
	}
	if err := c.start(); err != nil {
		return err
	}
	c.running = true
	return nil
}

// RequirePassword makes TCP connections of every role except the superuser
// "postgres" authenticate with scram-sha-256 (so DSN keeps working), and
// restarts the server so that the rule is in force when it returns. Create
// the roles with CREATE ROLE ... LOGIN PASSWORD '...'; PostgreSQL 14 and
// later store such passwords as SCRAM verifiers.
func (c *Cluster) RequirePassword() error {
	hba := "local all all trust\n" +
		"host all postgres 127.0.0.1/32 trust\n" +
		"host all postgres ::1/128 trust\n" +
		"host all all 127.0.0.1/32 scram-sha-256\n" +
		"host all all ::1/128 scram-sha-256\n"
	path := filepath.Join(c.dir, "pg_hba.conf")
	if err := os.WriteFile(path, []byte(hba), 0o600); err != nil {
		return err
	}
	if c.cred != nil {
		if err := os.Chown(path, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running {
		return nil // read when the server starts
	}
	if err := c.pgctl("stop", "-m", "fast"); err != nil {
		return err
	}
	return c.start()
}

func (c *Cluster) stop() {
	_ = c.Stop("immediate")
	_ = os.RemoveAll(filepath.Dir(c.dir))
}

var template struct {
	once sync.Once
	dir  string
	bin  string
	cred *syscall.Credential
	err  error
}

// startCluster copies a data directory made once by initdb and starts it.
func startCluster(opts []ClusterOption) (*Cluster, error) {
	template.once.Do(func() { template.dir, template.bin, template.cred, template.err = initTemplate() })
	if template.err != nil {
		return nil, template.err
	}
	root, err := os.MkdirTemp("", "pgxleak-cluster-")
	if err != nil {
		return nil, err
	}
	if err := chown(root, template.cred); err != nil {
		return nil, err
	}
	dir := filepath.Join(root, "data")
	if out, err := run(template.cred, "cp", "-a", template.dir, dir); err != nil {
		_ = os.RemoveAll(root)
		return nil, fmt.Errorf("copying the template cluster: %w: %s", err, out)
	}
	port, err := freePort()
	if err != nil {
		_ = os.RemoveAll(root)
		return nil, err
	}
	c := &Cluster{dir: dir, port: port, bin: template.bin, cred: template.cred, settings: map[string]string{}}
	for _, o := range opts {
		o(c.settings)
	}
	if err := c.start(); err != nil {
		_ = os.RemoveAll(root)
		return nil, err
	}
	c.running = true
	return c, nil
}

func (c *Cluster) start() error {
	o := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
		c.port, filepath.Dir(c.dir))
	keys := make([]string, 0, len(c.settings))
	for k := range c.settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		o += fmt.Sprintf(" -c %s=%s", k, c.settings[k])
	}
	return c.pgctl("start", "-w", "-t", "60", "-o", o, "-l", filepath.Join(filepath.Dir(c.dir), "server.log"))
}

func (c *Cluster) pgctl(args ...string) error {
	out, err := run(c.cred, filepath.Join(c.bin, "pg_ctl"), append([]string{"-D", c.dir}, args...)...)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(filepath.Dir(c.dir), "server.log"))
		return fmt.Errorf("pg_ctl %v: %w: %s\n%s", args, err, out, log)
	}
	return nil
}

// removeTemplate deletes the data directory initdb made for this process.
func removeTemplate() {
	if template.dir != "" {
		_ = os.RemoveAll(filepath.Dir(template.dir))
	}
}

func initTemplate() (dir, bin string, cred *syscall.Credential, err error) {
	bin, err = findBin()
	if err != nil {
		return "", "", nil, err
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			return "", "", nil, fmt.Errorf("running as root and no unprivileged user 'nobody' to run PostgreSQL as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	root, err := os.MkdirTemp("", "pgxleak-template-")
	if err != nil {
		return "", "", nil, err
	}
	if err := chown(root, cred); err != nil {
		return "", "", nil, err
	}
	dir = filepath.Join(root, "data")
	out, err := run(cred, filepath.Join(bin, "initdb"), "-D", dir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions")
	if err != nil {
		return "", "", nil, fmt.Errorf("initdb: %w: %s", err, out)
	}
	return dir, bin, cred, nil
}

// findBin finds the directory of initdb and pg_ctl: on PATH, or the newest
// Debian /usr/lib/postgresql/*/bin.
func findBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	var dirs []string
	if os.Getenv(hideLocalEnv) != "1" {
		dirs, _ = filepath.Glob("/usr/lib/postgresql/*/bin")
	}
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("no initdb on PATH or in /usr/lib/postgresql/*/bin")
}

func run(cred *syscall.Credential, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Dir = os.TempDir()
	return cmd.CombinedOutput()
}

func chown(dir string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	return os.Chown(dir, int(cred.Uid), int(cred.Gid))
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
