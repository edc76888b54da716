package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"

	"github.com/gemq-dev/gemq/infra/pushsub"
	"github.com/gemq-dev/gemq/internal/task"
)

// Function targets, as registered by functions/ingest and functions/worker
// (functions.HTTP) and named in Terraform's entry_point.
const (
	TargetIngest = "Ingest"
	TargetWorker = "Worker"
)

// How the functions are served, exactly as deployed: Cloud Functions (Gen2)
// runs one process per function with FUNCTION_TARGET=<entry point>, and
// funcframework.Start then serves that one registered function at "/" (see
// functions-framework-go v1.9.2 funcframework.initServer). Without
// FUNCTION_TARGET it would serve every function at "/<Name>" with an exact
// ServeMux pattern, so ingest's "/Ingest/v1/jobs/..." routes would never
// reach it. So the stack starts one funcframework server per target, each
// with FUNCTION_TARGET set while its server initialises (initServer reads it
// once, before listening; once the port answers it has been read).
//
// funcframework servers cannot be stopped and the registry is per process, so
// they are started once per process and shared; each Stack puts its own
// front server (a reverse proxy that counts invocations and can be shut
// down cleanly) before them.
var (
	ffOnce  sync.Once
	ffAddrs map[string]string
	ffErr   error
)

func serveFunctions() (map[string]string, error) {
	ffOnce.Do(func() {
		addrs := map[string]string{}
		for _, target := range []string{TargetIngest, TargetWorker} {
			addr, err := startFunction(target)
			if err != nil {
				ffErr = err
				return
			}
			addrs[target] = addr
		}
		ffAddrs = addrs
	})
	return ffAddrs, ffErr
}

func startFunction(target string) (string, error) {
	prev, had := os.LookupEnv("FUNCTION_TARGET")
	defer func() {
		if had {
			os.Setenv("FUNCTION_TARGET", prev)
		} else {
			os.Unsetenv("FUNCTION_TARGET")
		}
	}()
	var lastErr error
	for range 5 {
		addr, err := freeAddr()
		if err != nil {
			return "", err
		}
		host, port, _ := net.SplitHostPort(addr)
		os.Setenv("FUNCTION_TARGET", target)
		errc := make(chan error, 1)
		go func() { errc <- funcframework.StartHostPort(host, port) }()
		if lastErr = waitListening(addr, errc); lastErr == nil {
			return addr, nil
		}
	}
	return "", fmt.Errorf("funcframework serve %s: %w", target, lastErr)
}

// waitListening waits until addr accepts connections, or errc reports that
// the server failed.
func waitListening(addr string, errc <-chan error) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-errc:
			return err
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s: %w", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// front is a stoppable HTTP server in front of one function: a reverse proxy
// that counts the invocations.
type front struct {
	srv   *http.Server
	url   string
	calls atomic.Int64 // requests received
	tasks atomic.Int64 // of which from Cloud Tasks (X-CloudTasks-TaskName)
	done  chan struct{}

	handled atomic.Int64 // requests answered
	busy    atomic.Int64 // total handling time of those, ns
	busiest atomic.Int64 // longest handling time, ns

	perTask  bool // count invocations per task id (the worker)
	mu       sync.Mutex
	invoked  map[string]int // task id → invocations
	unparsed int            // requests whose task id could not be read
}

// countTask reads the task id from a worker request (a push body or a Cloud
// Tasks body) and counts the invocation. The body is left readable.
func (f *front) countTask(r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body))
	id := ""
	if err == nil {
		data := body
		if r.Header.Get("X-CloudTasks-TaskName") == "" {
			var d pushsub.Delivery
			if json.Unmarshal(body, &d) == nil {
				data = d.Message.Data
			}
		}
		if e, err := task.Decode(data); err == nil {
			id = e.TaskID
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if id == "" {
		f.unparsed++
		return
	}
	f.invoked[id]++
}

func startFront(listenAddr, backend string, perTask bool, log *slog.Logger) (*front, error) {
	if listenAddr == "" {
		listenAddr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, err
	}
	target := &url.URL{Scheme: "http", Host: backend}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 512
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
		},
		Transport: tr,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, "gemq local stack: function unreachable: "+err.Error(), http.StatusBadGateway)
		},
	}
	f := &front{done: make(chan struct{}), perTask: perTask, invoked: map[string]int{}}
	f.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			f.calls.Add(1)
			if r.Header.Get("X-CloudTasks-TaskName") != "" {
				f.tasks.Add(1)
			}
			start := time.Now()
			if f.perTask {
				f.countTask(r)
			}
			proxy.ServeHTTP(w, r)
			f.handledIn(time.Since(start))
		}),
		ReadHeaderTimeout: 30 * time.Second,
		// A handler's panic is recovered by net/http and logged here: in
		// the stack's log, not on the terminal.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError),
	}
	f.url = "http://" + lis.Addr().String()
	go func() {
		defer close(f.done)
		if err := f.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(os.Stderr, "gemq stack: front server %s: %v\n", f.url, err)
		}
	}()
	return f, nil
}

// handledIn records one answered request's handling time.
func (f *front) handledIn(d time.Duration) {
	f.busy.Add(int64(d))
	f.handled.Add(1)
	for {
		m := f.busiest.Load()
		if int64(d) <= m || f.busiest.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// handling returns the total and the longest handling time so far.
func (f *front) handling() (total, longest time.Duration) {
	return time.Duration(f.busy.Load()), time.Duration(f.busiest.Load())
}

// stop stops accepting and waits for the requests in flight (up to ctx).
func (f *front) stop(ctx context.Context) error {
	if f == nil {
		return nil
	}
	err := f.srv.Shutdown(ctx)
	if err != nil {
		f.srv.Close()
	}
	<-f.done
	return err
}
