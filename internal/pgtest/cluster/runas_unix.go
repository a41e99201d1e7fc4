//go:build unix

package cluster

import (
	"os/exec"
	"syscall"
)

// runAs makes cmd run as owner.
func runAs(cmd *exec.Cmd, owner *account) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(owner.uid), Gid: uint32(owner.gid)}}
}
