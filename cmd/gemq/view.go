package main

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"

	"github.com/gemq-dev/gemq/internal/metrics"
)

// The live view: one HTML page with its script inline (no build step, no
// external assets) polling /metrics.json, which is a snapshot of the same
// metrics the worker exports in the cloud (internal/metrics), read in
// process: gemq dev and gemq run install the local reader as the process's
// MeterProvider before the stack's worker builds its recorder.
//
//go:embed view/index.html
var viewFS embed.FS

// viewJob is what the page shows of the job gemq run submitted.
type viewJob struct {
	ID    string `json:"id"`
	Total int    `json:"total"`
}

// view serves the live page.
type view struct {
	loc *metrics.Local
	job atomic.Pointer[viewJob]
	srv *http.Server
	URL string
}

// startView installs a local metrics reader as the process's
// MeterProvider and serves the page on addr ("off": no view, nil).
func startView(addr string) (*view, error) {
	if addr == "off" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, &exitError{code: exitStack, msg: "--view-addr: " + err.Error() + "\n  Pick another port (127.0.0.1:0 takes a free one), or --view-addr off."}
	}
	v := &view{loc: metrics.NewLocal(), URL: "http://" + ln.Addr().String() + "/"}
	otel.SetMeterProvider(v.loc.Provider)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		b, _ := viewFS.ReadFile("view/index.html")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(b)
	})
	mux.HandleFunc("GET /metrics.json", v.serveMetrics)
	v.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := v.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			ln.Close()
		}
	}()
	return v, nil
}

// setJob tells the page which job to show progress for.
func (v *view) setJob(id string, total int) {
	if v != nil {
		v.job.Store(&viewJob{ID: id, Total: total})
	}
}

func (v *view) serveMetrics(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	s, err := v.loc.Snapshot(ctx)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(struct {
		metrics.Snapshot
		Job *viewJob `json:"job,omitempty"`
	}{s, v.job.Load()})
}

// close stops serving the page.
func (v *view) close() {
	if v == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	v.srv.Shutdown(ctx)
}
