package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNoRedis is wrapped by Start's error when REDIS_ADDR is unset and no
// redis-server is on PATH.
var ErrNoRedis = errors.New("no Redis: set REDIS_ADDR=host:port, or install redis-server " +
	"(Debian/Ubuntu: sudo apt-get install -y redis-server; macOS: brew install redis) so gemq can start one on a free port")

// redisServer is a redis-server child process started for the stack.
type redisServer struct {
	addr string
	cmd  *exec.Cmd
	done <-chan struct{}
}

// startRedis starts redis-server from PATH on addr ("" → a free loopback
// port), keeping nothing on disk, with its log in logw.
func startRedis(ctx context.Context, addr, dir string, logw io.Writer) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrNoRedis, err)
	}
	var lastErr error
	for range 5 {
		a := addr
		if a == "" {
			if a, err = freeAddr(); err != nil {
				return nil, err
			}
		}
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("redis address %q: %w", a, err)
		}
		// maxmemory-policy noeviction as in the deployment: limiter state must
		// never be evicted.
		cmd := exec.Command(bin, "--bind", host, "--port", port, "--save", "", "--appendonly", "no",
			"--dir", dir, "--maxmemory-policy", "noeviction", "--loglevel", "warning")
		cmd.Stdout, cmd.Stderr = logw, logw
		cmd.SysProcAttr = childAttr()
		done, err := startChild(cmd)
		if err != nil {
			return nil, fmt.Errorf("start redis-server: %w", err)
		}
		r := &redisServer{addr: a, cmd: cmd, done: done}
		if lastErr = r.waitReady(ctx); lastErr == nil {
			return r, nil
		}
		r.stop()
		if addr != "" {
			break // a fixed address that does not work will not start working
		}
	}
	return nil, fmt.Errorf("start redis-server: %w", lastErr)
}

// startChild starts cmd and waits for it in the background; done is closed
// when it has exited. Linux's parent-death signal (childAttr) fires when the
// OS thread that forked the child exits, not the process, and the Go
// runtime may retire an idle thread at any time: so the child is started
// and waited for on one goroutine locked to its thread for the child's
// whole life.
func startChild(cmd *exec.Cmd) (done <-chan struct{}, err error) {
	d := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			errc <- err
			return
		}
		errc <- nil
		cmd.Wait()
		close(d)
	}()
	return d, <-errc
}

func (r *redisServer) waitReady(ctx context.Context) error {
	c := redis.NewClient(&redis.Options{Addr: r.addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-r.done:
			return fmt.Errorf("redis-server on %s exited at start (port taken?)", r.addr)
		default:
		}
		if err := c.Ping(ctx).Err(); err == nil {
			return nil
		} else if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("redis-server on %s not answering PING: %w", r.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop terminates the server and waits for it.
func (r *redisServer) stop() {
	if r == nil || r.cmd.Process == nil {
		return
	}
	r.cmd.Process.Signal(os.Interrupt)
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		r.cmd.Process.Kill()
		<-r.done
	}
}

// pingRedis checks a Redis the user pointed REDIS_ADDR at.
func pingRedis(ctx context.Context, addr, password string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return &EnvError{Var: "REDIS_ADDR", Value: addr, Problem: "not host:port",
			Fix: "set REDIS_ADDR=host:port, or unset it so gemq starts redis-server itself"}
	}
	c := redis.NewClient(&redis.Options{Addr: addr, Password: password, MaxRetries: -1, DialTimeout: 3 * time.Second})
	defer c.Close()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &EnvError{Var: "REDIS_ADDR", Value: addr, Problem: fmt.Sprintf("redis PING: %v", err),
			Fix: "start that Redis (or fix REDIS_PASSWORD), or unset REDIS_ADDR so gemq starts redis-server itself"}
	}
	return nil
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}

// RedisServer is a redis-server child process on a free loopback port
// (never the machine's 6379), keeping nothing on disk: the one the stack
// starts, for other local harnesses (e.g. infra/bench) that need a Redis of
// their own without a whole stack.
type RedisServer struct {
	// Addr is "127.0.0.1:port".
	Addr string
	s    *redisServer
}

// StartRedis starts redis-server from PATH on a free loopback port with
// its working directory dir and its output in logw (nil: discarded), and
// returns it once it answers PING. It wraps ErrNoRedis when redis-server is
// not installed. Stop it with Stop.
func StartRedis(ctx context.Context, dir string, logw io.Writer) (*RedisServer, error) {
	if logw == nil {
		logw = io.Discard
	}
	s, err := startRedis(ctx, "", dir, logw)
	if err != nil {
		return nil, err
	}
	return &RedisServer{Addr: s.addr, s: s}, nil
}

// Stop terminates the server and waits for it to exit. Safe on nil.
func (r *RedisServer) Stop() {
	if r != nil {
		r.s.stop()
	}
}
