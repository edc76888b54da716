package stack

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"
)

// EnvError is a start-up failure caused by a variable of the user's
// environment (REDIS_ADDR, PUBSUB_EMULATOR_HOST, GEMQ_QUOTAS_FILE, …): it
// names the variable, what is wrong with it and what to do. Start returns
// it before the stack says it is up; nothing Start started is left running.
type EnvError struct {
	Var     string // the environment variable at fault
	Value   string // its value, when showing it helps (never a secret)
	Problem string // what is wrong
	Fix     string // what to do
}

func (e *EnvError) Error() string {
	s := e.Var
	if e.Value != "" {
		s += "=" + e.Value
	}
	s += ": " + e.Problem
	if e.Fix != "" {
		s += "\n  " + e.Fix
	}
	return s
}

// ListenError is a start-up failure of a part that cannot listen on the
// address Options gave it, typically a fixed port already in use. Option
// names the Options field (e.g. "PubSubAddr") so that a command can name its
// own flag.
type ListenError struct {
	Part   string // "ingest", "worker", "Pub/Sub (pstest)", "Cloud Tasks emulator", "Gemini stand-in"
	Option string // "IngestAddr", "WorkerAddr", "PubSubAddr", "TasksAddr", "GeminiAddr"
	Addr   string
	Err    error
}

func (e *ListenError) Error() string {
	if e.InUse() {
		return fmt.Sprintf("%s cannot listen on %s: the port is already in use", e.Part, e.Addr)
	}
	return fmt.Sprintf("%s cannot listen on %s: %v", e.Part, e.Addr, e.Err)
}

func (e *ListenError) Unwrap() error { return e.Err }

// InUse reports whether another process holds the port.
func (e *ListenError) InUse() bool {
	return errors.Is(e.Err, syscall.EADDRINUSE) || strings.Contains(fmt.Sprint(e.Err), "address already in use")
}

// Port is the port part of Addr.
func (e *ListenError) Port() string {
	_, p, err := net.SplitHostPort(e.Addr)
	if err != nil {
		return e.Addr
	}
	return p
}

// checkListen fails with a *ListenError when addr has a fixed port that
// cannot be listened on now. A port 0 (any free one) always passes.
func checkListen(part, option, addr string) error {
	if addr == "" {
		return nil
	}
	if _, p, err := net.SplitHostPort(addr); err == nil && p == "0" {
		return nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return &ListenError{Part: part, Option: option, Addr: addr, Err: err}
	}
	return l.Close()
}

// dialCheck fails with an *EnvError when nothing accepts TCP connections at
// the address variable v holds.
func dialCheck(v, addr, fix string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return &EnvError{Var: v, Value: addr, Problem: "not host:port", Fix: fix}
	}
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return &EnvError{Var: v, Value: addr, Problem: fmt.Sprintf("nothing answers there (%v)", err), Fix: fix}
	}
	return c.Close()
}
