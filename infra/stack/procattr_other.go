//go:build !linux

package stack

import "syscall"

// childAttr: only Linux has a parent-death signal; elsewhere a child dies
// with gemq only when Close (or an orderly exit) stops it.
func childAttr() *syscall.SysProcAttr { return nil }
