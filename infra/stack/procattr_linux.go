//go:build linux

package stack

import "syscall"

// childAttr puts a child process (redis-server) in its own process group,
// so that a Ctrl-C at the terminal reaches gemq alone and gemq stops the
// child in order, and has the kernel SIGKILL it when the thread that
// started it exits: gemq killed with SIGKILL, or crashing on a panic
// before Close runs, leaves no redis-server behind (see startChild for why
// the thread matters).
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
