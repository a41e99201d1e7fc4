package pgtest

import (
	"fmt"
	"testing"

	"github.com/pgxleak/pgxleak/internal/pgtest/cluster"
)

// Cluster is a private PostgreSQL cluster that a test owns: it may stop,
// kill or restart it without disturbing any other test.
type Cluster = cluster.Cluster

// ClusterOption sets a server setting for NewCluster.
type ClusterOption = cluster.Option

// Setting sets a server configuration parameter for NewCluster (a
// postgresql.conf name and value), e.g. Setting("max_connections", "10").
func Setting(name, value string) ClusterOption { return cluster.Setting(name, value) }

// NewCluster starts a private cluster for t and stops and removes it when t
// ends. Without PostgreSQL binaries it fails the run, as a missing shared
// server does (see Missing).
func NewCluster(t testing.TB, opts ...ClusterOption) *Cluster {
	t.Helper()
	c, err := cluster.New(opts...)
	if err != nil {
		Missing(t, DepPostgres, fmt.Errorf("cannot start a private cluster: %w", err))
	}
	t.Cleanup(c.Close)
	return c
}
