// Package redistest starts real redis-server processes for tests.
//
// Tests that need Redis call Start (one standalone server) or StartCluster (a
// Redis Cluster of several masters). Each server listens on a free loopback
// port, keeps nothing on disk, and is stopped by the test's Cleanup. When no
// redis-server can be started the test fails: it never skips, so a CI machine
// without Redis goes red instead of silently green.
//
// The binary is "redis-server" from PATH unless REDISTEST_SERVER names another.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one running redis-server.
type Server struct {
	// Addr is "127.0.0.1:port".
	Addr string
	cmd  *exec.Cmd
	bin  string
	args []string
}

// Client returns a new client for s, closed when tb ends.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	tb.Cleanup(func() { c.Close() })
	return c
}

// Stop kills the server at once, as a crash would. Cleanup stops it anyway;
// call Stop to test what happens when Redis goes away.
func (s *Server) Stop() {
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
}

// Restart kills the server and starts an empty one on the same address, as
// a crash followed by a restart without persistence would (Memorystore's
// BASIC tier after maintenance).
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop()
	cmd := exec.Command(s.bin, s.args...)
	if err := cmd.Start(); err != nil {
		tb.Fatalf("redistest: restart %s: %v", s.bin, err)
	}
	s.cmd = cmd
	if err := waitPing(s.Addr, 10*time.Second); err != nil {
		tb.Fatalf("redistest: restart: %v", err)
	}
}

// Start starts a standalone redis-server and returns it once it answers PING.
func Start(tb testing.TB, extraArgs ...string) *Server {
	tb.Helper()
	return start(tb, tb.TempDir(), extraArgs...)
}

// Binary reports the redis-server binary that Start uses, or an error saying
// how to install one.
func Binary() (string, error) {
	name := os.Getenv("REDISTEST_SERVER")
	if name == "" {
		name = "redis-server"
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("redistest: %s not found (install it: apt-get install -y redis-server; or set REDISTEST_SERVER): %w", name, err)
	}
	return path, nil
}

func start(tb testing.TB, dir string, extraArgs ...string) *Server {
	tb.Helper()
	bin, err := Binary()
	if err != nil {
		tb.Fatal(err)
	}
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			tb.Fatalf("redistest: free port: %v", err)
		}
		args := append([]string{
			"--port", strconv.Itoa(port),
			"--bind", "127.0.0.1",
			"--save", "",
			"--appendonly", "no",
			"--dir", dir,
			"--maxmemory-policy", "noeviction",
			"--protected-mode", "no",
		}, extraArgs...)
		cmd := exec.Command(bin, args...)
		var out strings.Builder
		cmd.Stdout = &out
		cmd.Stderr = &out
		if err := cmd.Start(); err != nil {
			tb.Fatalf("redistest: start %s: %v", bin, err)
		}
		s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, bin: bin, args: args}
		if err := waitPing(s.Addr, 10*time.Second); err != nil {
			s.Stop()
			lastErr = fmt.Errorf("%w; server output:\n%s", err, out.String())
			continue // most likely the port was taken between freePort and bind
		}
		tb.Cleanup(s.Stop)
		return s
	}
	tb.Fatalf("redistest: could not start redis-server: %v", lastErr)
	return nil
}

// StartCluster starts a Redis Cluster of the given number of masters (no
// replicas), with the 16384 slots split evenly, and returns their addresses
// once the cluster reports cluster_state:ok on every node.
func StartCluster(tb testing.TB, masters int) []string {
	tb.Helper()
	if masters < 1 {
		tb.Fatalf("redistest: StartCluster needs at least one master, got %d", masters)
	}
	ctx := context.Background()
	root := tb.TempDir()
	nodes := make([]*Server, masters)
	clients := make([]*redis.Client, masters)
	for i := range nodes {
		dir := filepath.Join(root, strconv.Itoa(i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			tb.Fatal(err)
		}
		nodes[i] = start(tb, dir, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000")
		clients[i] = nodes[i].Client(tb)
	}
	const slots = 16384
	for i, c := range clients {
		lo, hi := i*slots/masters, (i+1)*slots/masters-1
		if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err(); err != nil {
			tb.Fatalf("redistest: CLUSTER ADDSLOTSRANGE on %s: %v", nodes[i].Addr, err)
		}
	}
	for _, n := range nodes[1:] {
		host, port, _ := net.SplitHostPort(n.Addr)
		if err := clients[0].ClusterMeet(ctx, host, port).Err(); err != nil {
			tb.Fatalf("redistest: CLUSTER MEET %s: %v", n.Addr, err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, c := range clients {
		for {
			info, err := c.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(masters)) {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("redistest: cluster did not become ready: %v %q", err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	addrs := make([]string, masters)
	for i, n := range nodes {
		addrs[i] = n.Addr
	}
	// Every node must also agree on the slot map before clients rely on it.
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer cc.Close()
	for {
		err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			s, err := c.ClusterSlots(ctx).Result()
			if err != nil {
				return err
			}
			if len(s) != masters {
				return fmt.Errorf("node sees %d slot ranges, want %d", len(s), masters)
			}
			return nil
		})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("redistest: cluster slot map did not converge: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return addrs
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitPing(addr string, timeout time.Duration) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	deadline := time.Now().Add(timeout)
	for {
		err := c.Ping(context.Background()).Err()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: %s did not answer PING within %v: %w", addr, timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
