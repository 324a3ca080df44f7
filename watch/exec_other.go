//go:build !unix

package watch

import "os/exec"

func setProcessGroup(*exec.Cmd) {}
