package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a redis-server child process started by the harness on a free
// loopback port (never the machine's 6379), keeping nothing on disk.
type Redis struct {
	// Addr is "127.0.0.1:port".
	Addr string
	cmd  *exec.Cmd
	done chan struct{}
	out  *strings.Builder
}

// StartRedis starts redis-server from PATH (or $REDISTEST_SERVER) in dir and
// returns it once it answers PING. Stop it with Stop.
func StartRedis(ctx context.Context, dir string) (*Redis, error) {
	bin := os.Getenv("REDISTEST_SERVER")
	if bin == "" {
		bin = "redis-server"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("bench: %s not found (apt-get install -y redis-server): %w", bin, err)
	}
	var lastErr error
	for range 5 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("bench: free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		out := &strings.Builder{}
		cmd := exec.Command(path, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir, "--maxclients", "10000",
			"--maxmemory-policy", "noeviction", "--protected-mode", "no", "--loglevel", "warning")
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("bench: start %s: %w", path, err)
		}
		r := &Redis{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, done: make(chan struct{}), out: out}
		go func() { cmd.Wait(); close(r.done) }()
		if lastErr = r.waitPing(ctx); lastErr == nil {
			return r, nil
		}
		r.Stop()
	}
	return nil, fmt.Errorf("bench: start redis-server: %w", lastErr)
}

func (r *Redis) waitPing(ctx context.Context) error {
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-r.done:
			return fmt.Errorf("redis-server on %s exited: %s", r.Addr, r.out.String())
		default:
		}
		err := c.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("redis PING %s: %w", r.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop terminates the server and waits for it to exit. Safe on nil.
func (r *Redis) Stop() {
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
