package chaos

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// proc is a child process the harness can kill, pause and wait for.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func startProc(name string, cmd *exec.Cmd) (*proc, error) {
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	return p, nil
}

// kill sends SIGKILL and waits for the process to be gone. Safe on nil.
func (p *proc) kill() {
	if p == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGCONT) // a stopped process must run to die
	p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) signal(sig syscall.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s %v: %w", p.name, sig, err)
	}
	return nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// freePort returns a loopback port free right now.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}

// startRedis starts an empty redis-server on a free loopback port, keeping
// nothing on disk (noeviction, as deployed); extra arguments are appended
// (e.g. --replicaof). It returns once the server answers PING.
func startRedis(ctx context.Context, dir string, logw io.Writer, extra ...string) (*proc, string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, "", fmt.Errorf("chaos needs redis-server on PATH: %w", err)
	}
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, "", err
		}
		args := append([]string{"--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
			"--dir", dir, "--maxmemory-policy", "noeviction", "--loglevel", "warning"}, extra...)
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = logw, logw
		p, err := startProc("redis-server", cmd)
		if err != nil {
			return nil, "", err
		}
		addr := "127.0.0.1:" + port
		if lastErr = waitRedis(ctx, p, addr); lastErr == nil {
			return p, addr, nil
		}
		p.kill()
	}
	return nil, "", fmt.Errorf("start redis-server: %w", lastErr)
}

func waitRedis(ctx context.Context, p *proc, addr string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if p.exited() {
			return fmt.Errorf("redis-server on %s exited at start", addr)
		}
		err := c.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("redis PING %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// function is one gemq function (Worker or Ingest) served by the
// gemqworker binary in its own process, on a fixed port so that a restart
// answers at the same URL.
type function struct {
	target, port, bin string
	env               []string
	logw              io.Writer

	mu sync.Mutex
	p  *proc
}

func (f *function) url() string { return "http://127.0.0.1:" + f.port }

// start starts the process and waits until it listens.
func (f *function) start() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cmd := exec.Command(f.bin)
	cmd.Env = append(append(os.Environ(), f.env...), "FUNCTION_TARGET="+f.target, "PORT="+f.port)
	cmd.Stdout = f.logw
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return fmt.Errorf("gemqworker stderr pipe: %w", err)
	}
	p, err := startProc("gemqworker "+f.target, cmd)
	if err != nil {
		return err
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "listening ") {
				once.Do(func() { close(ready) })
			}
			fmt.Fprintln(f.logw, sc.Text())
		}
		once.Do(func() { close(ready) })
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
	}
	if p.exited() {
		return fmt.Errorf("gemqworker %s exited at start (see the log)", f.target)
	}
	f.p = p
	return nil
}

// kill SIGKILLs the process: requests in flight get no answer.
func (f *function) kill() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.p.kill()
}

// buildOnce builds infra/cmd/gemqworker once per process.
var buildOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "gemq-chaos-bin-")
	if err != nil {
		return "", fmt.Errorf("temp dir: %w", err)
	}
	bin := filepath.Join(dir, "gemqworker")
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	// The tag compiles in the test clock hook (config.EnvTestCalendarOffset),
	// which the Pacific-day scenarios set; without the variable it does
	// nothing, so every other scenario runs the worker as deployed.
	cmd := exec.Command("go", "build", "-tags", "gemqtestclock", "-o", bin, "./infra/cmd/gemqworker")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./infra/cmd/gemqworker: %w\n%s", err, out)
	}
	return bin, nil
})

// moduleRoot finds the directory holding go.mod from the working directory.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("go env GOMOD: not inside the gemq module")
	}
	return filepath.Dir(gomod), nil
}
