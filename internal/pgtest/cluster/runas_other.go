//go:build !unix

package cluster

import "os/exec"

// runAs is never called off Unix, where os.Geteuid is -1: there is no root
// to step down from.
func runAs(*exec.Cmd, *account) {}
