// Package cluster starts throwaway PostgreSQL clusters from the local
// binaries (initdb and pg_ctl, on PATH or in Debian's
// /usr/lib/postgresql/*/bin): each in a temporary directory, listening on a
// free port of 127.0.0.1, with trust authentication, and run as the user
// nobody when the process runs as root (PostgreSQL refuses to run as root).
//
// It does not import testing: pgtest wraps it for the tests
// (pgtest.NewCluster), and the leakdemo example uses it when no server
// answers. initdb runs once per process, into a template that each cluster
// copies; RemoveTemplate deletes it.
package cluster

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
)

// HideLocalEnv, set to 1, makes pgtest and this package behave as on a
// machine without PostgreSQL: pgtest does not try the local server, and
// New does not look in /usr/lib/postgresql (initdb on PATH is still found;
// hiding it is up to the caller). It exists for the tests of that case.
const HideLocalEnv = "PGXLEAK_PGTEST_HIDE_LOCAL"

// Cluster is a running (or stopped) throwaway PostgreSQL cluster. Close
// stops it and removes its directory.
type Cluster struct {
	root     string   // the cluster's temporary directory: data, socket, log
	dir      string   // data directory, under root
	port     int      // on 127.0.0.1
	bin      string   // the directory of initdb and pg_ctl
	owner    *account // the unprivileged user the server runs as, when running as root
	settings map[string]string

	mu      sync.Mutex // guards running, and serializes pg_ctl
	running bool
}

// account is the user a command runs as.
type account struct{ uid, gid int }

// Option sets a server setting for New.
type Option func(map[string]string)

// Setting sets a server configuration parameter (a postgresql.conf name
// and value), e.g. Setting("max_connections", "10").
func Setting(name, value string) Option {
	return func(m map[string]string) { m[name] = value }
}

// New starts a cluster: a copy of the process's template, made by initdb on
// first use, on a free port. The caller must Close it.
func New(opts ...Option) (*Cluster, error) {
	template.once.Do(func() { template.dir, template.bin, template.owner, template.err = initTemplate() })
	if template.err != nil {
		return nil, template.err
	}
	root, err := os.MkdirTemp("", "pgxleak-cluster-")
	if err != nil {
		return nil, err
	}
	if err := chown(root, template.owner); err != nil {
		_ = os.RemoveAll(root)
		return nil, err
	}
	dir := filepath.Join(root, "data")
	if out, err := run(template.owner, "cp", "-a", template.dir, dir); err != nil {
		_ = os.RemoveAll(root)
		return nil, fmt.Errorf("copying the template cluster: %w: %s", err, out)
	}
	port, err := freePort()
	if err != nil {
		_ = os.RemoveAll(root)
		return nil, err
	}
	c := &Cluster{root: root, dir: dir, port: port, bin: template.bin, owner: template.owner, settings: map[string]string{}}
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

// DSN returns a superuser DSN for the cluster's "postgres" database.
func (c *Cluster) DSN() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

// Port returns the TCP port the cluster listens on, on 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// Dir returns the cluster's temporary directory, which Close removes.
func (c *Cluster) Dir() string { return c.root }

// Bin returns the directory of the PostgreSQL binaries the cluster runs.
func (c *Cluster) Bin() string { return c.bin }

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

// Close stops the server at once and removes the cluster's directory.
func (c *Cluster) Close() {
	_ = c.Stop("immediate")
	_ = os.RemoveAll(c.root)
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
	if err := chown(path, c.owner); err != nil {
		return err
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

func (c *Cluster) start() error {
	o := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
		c.port, c.root)
	keys := make([]string, 0, len(c.settings))
	for k := range c.settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		o += fmt.Sprintf(" -c %s=%s", k, c.settings[k])
	}
	return c.pgctl("start", "-w", "-t", "60", "-o", o, "-l", filepath.Join(c.root, "server.log"))
}

func (c *Cluster) pgctl(args ...string) error {
	out, err := run(c.owner, filepath.Join(c.bin, "pg_ctl"), append([]string{"-D", c.dir}, args...)...)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(c.root, "server.log"))
		return fmt.Errorf("pg_ctl %v: %w: %s\n%s", args, err, out, log)
	}
	return nil
}

// template is the data directory initdb made for this process, which every
// cluster copies.
var template struct {
	once  sync.Once
	dir   string
	bin   string
	owner *account
	err   error
}

// RemoveTemplate deletes the data directory initdb made for this process,
// if any. Clusters already started keep running.
func RemoveTemplate() {
	if template.dir != "" {
		_ = os.RemoveAll(filepath.Dir(template.dir))
	}
}

func initTemplate() (dir, bin string, owner *account, err error) {
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
		owner = &account{uid: uid, gid: gid}
	}
	root, err := os.MkdirTemp("", "pgxleak-template-")
	if err != nil {
		return "", "", nil, err
	}
	if err := chown(root, owner); err != nil {
		_ = os.RemoveAll(root)
		return "", "", nil, err
	}
	dir = filepath.Join(root, "data")
	out, err := run(owner, filepath.Join(bin, "initdb"), "-D", dir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions")
	if err != nil {
		_ = os.RemoveAll(root)
		return "", "", nil, fmt.Errorf("initdb: %w: %s", err, out)
	}
	return dir, bin, owner, nil
}

// findBin finds the directory of initdb and pg_ctl: on PATH, or the newest
// Debian /usr/lib/postgresql/*/bin.
func findBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	var dirs []string
	if os.Getenv(HideLocalEnv) != "1" {
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

// run runs a command as owner (nil: as this process's user), in the
// temporary directory (which owner can enter), with C messages.
func run(owner *account, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	if owner != nil {
		runAs(cmd, owner)
	}
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Dir = os.TempDir()
	return cmd.CombinedOutput()
}

func chown(path string, owner *account) error {
	if owner == nil {
		return nil
	}
	return os.Chown(path, owner.uid, owner.gid)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
