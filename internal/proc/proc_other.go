//go:build !linux

package proc

import "os/exec"

// DieWithParent does nothing here: only Linux can tie a child's life to its
// parent's (Pdeathsig). Tests rely on t.Cleanup to stop their children.
func DieWithParent(*exec.Cmd) {}
