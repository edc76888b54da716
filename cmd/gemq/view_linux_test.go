package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// browser returns the path of Chromium (GEMQ_CHROMIUM, else chromium on
// PATH); the test fails when there is none.
func browser(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("GEMQ_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	// Never a skip: a missing browser fails, as a missing redis-server or terraform does.
	t.Fatal("no chromium on PATH: apt-get install -y chromium chromium-driver (.ci/run does), or set GEMQ_CHROMIUM")
	return ""
}

// chart is what one SVG chart of the page shows: per polyline (used,
// limit, configured; reserved), the vertical positions of its points (SVG
// y grows downwards) and the values they are drawn from.
type chart struct {
	Series string               `json:"series"`
	Y      map[string][]float64 `json:"y"`
	Values map[string][]float64 `json:"values"`
}

// readCharts returns the page's charts, as drawn.
const readCharts = `[...document.querySelectorAll("svg.chart")].map(svg => {
  const pls = [...svg.querySelectorAll("polyline")];
  return {
    series: svg.dataset.series,
    y: Object.fromEntries(pls.map(pl => [pl.getAttribute("class"), pl.getAttribute("points").split(" ").map(p => parseFloat(p.split(",")[1]))])),
    values: Object.fromEntries(pls.map(pl => [pl.getAttribute("class"), pl.dataset.values.split(",").map(Number)]))
  };
})`

// TestLiveViewInABrowser runs `gemq run` on the example job (make run's
// job, time scaled: 1 quota minute = 3s) as a child process and watches its
// live view in headless Chromium until the job is done. Every chart of a
// quota window must show occupancy at or below its limit line at every
// sample, and the requests-per-minute chart must reach the line while the
// queue of reserved slots is not empty. It saves a screenshot taken mid-run
// (GEMQ_VIEW_SCREENSHOT names the file; the README's comes from there).
func TestLiveViewInABrowser(t *testing.T) {
	chromium := browser(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	job, err := filepath.Abs("../../examples/prompts.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "results.jsonl")
	c := startChild(t, "1", nil, "run", "--file", job, "-o", out, "--minute", "3s", "--rpm", "100", "--tpm", "1000000",
		"--latency", "fixed:200ms", "--view-addr", addr)
	exited := make(chan int, 1)
	go func() {
		c.cmd.Wait()
		exited <- c.cmd.ProcessState.ExitCode()
	}()
	url := "http://" + addr + "/"
	waitHTTP(t, url+"metrics.json", exited, c)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	actx, acancel := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1000, 1100))
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	if err := chromedp.Do(bctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("chromium %s: %v", chromium, err)
	}
	var shot []byte
	var charts []chart
	var jobText string
	for done := false; !done; {
		select {
		case code := <-exited:
			if code != exitOK {
				t.Fatalf("gemq run exited %d; stderr:\n%s", code, c.stderr)
			}
			done = true
		case <-time.After(700 * time.Millisecond):
		}
		if done {
			break // gemq is gone: the page shows what it last read
		}
		now, err := chromedp.Run(bctx, chromedp.Evaluate[[]chart](readCharts))
		if err != nil {
			t.Fatal(err)
		}
		text, err := chromedp.Run(bctx, chromedp.Text("#job"))
		if err != nil {
			t.Fatal(err)
		}
		if p := progressed(text); p < progressed(jobText) {
			t.Errorf("progress went back: %q after %q", text, jobText)
		}
		charts, jobText = now, text
		// Mid-run, with some history drawn and tasks queued: the README's
		// picture, the last such moment.
		if q := reserved(now); len(q) >= 4 && q[len(q)-1] > 0 {
			if shot, err = chromedp.Run(bctx, chromedp.FullScreenshot(100)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// gemq run exits once the job is done, so the page's last reading may
	// miss the last quota window's tasks (15 of them).
	if n := progressed(jobText); n < 250 || !strings.Contains(jobText, " of 300 tasks finished") {
		t.Errorf("last progress the page showed: %q, want at least 250 of 300", jobText)
	}
	reached := false
	var windows int
	q := reserved(charts)
	for _, ch := range charts {
		used, limit := ch.Y["used"], ch.Y["limit"]
		if limit == nil {
			continue // the reserved-slots chart
		}
		windows++
		uv, lv := ch.Values["used"], ch.Values["limit"]
		if len(used) != len(limit) || len(uv) != len(used) || len(lv) != len(used) || len(used) < 10 {
			t.Fatalf("%s: %d used and %d limit points, want as many, ≥ 10", ch.Series, len(used), len(limit))
		}
		for i := range used {
			if used[i] < limit[i]-0.01 || uv[i] > lv[i] {
				t.Errorf("%s: sample %d above the limit line: %v > %v (y %.2f < %.2f)", ch.Series, i, uv[i], lv[i], used[i], limit[i])
			}
		}
		if strings.HasSuffix(ch.Series, " rpm") {
			if len(q) != len(used) {
				t.Fatalf("%d samples of reserved slots, %d of rpm: want as many (one snapshot each)", len(q), len(used))
			}
			for i := range used {
				if math.Abs(used[i]-limit[i]) < 0.01 && uv[i] == lv[i] && q[i] > 0 {
					reached = true
				}
			}
		}
	}
	if windows != 3 {
		t.Errorf("%d quota window charts, want 3 (rpm, tpm, rpd): %+v", windows, charts)
	}
	if !reached {
		for _, ch := range charts {
			t.Logf("%s: %v", ch.Series, ch.Values)
		}
		t.Error("the rpm chart never reached its limit line while tasks waited for reserved slots")
	}
	if shot == nil {
		t.Fatal("no screenshot: the page never showed the job mid-way with tasks queued")
	}
	path := os.Getenv("GEMQ_VIEW_SCREENSHOT")
	if path == "" {
		path = filepath.Join(t.TempDir(), "live-view.png")
	}
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%d bytes)", path, len(shot))
}

// reserved returns the values the reserved-slots chart draws.
func reserved(charts []chart) []float64 {
	for _, ch := range charts {
		if v := ch.Values["reserved"]; v != nil {
			return v
		}
	}
	return nil
}

// progressed reads "N of M tasks finished" from the job line.
func progressed(text string) int {
	var id string
	var n, m int
	if _, err := fmt.Sscanf(strings.ReplaceAll(text, ":", " "), "job %s %d of %d", &id, &n, &m); err != nil {
		return 0
	}
	return n
}

// waitHTTP waits until url answers 200, failing when gemq exits first.
func waitHTTP(t *testing.T, url string, exited chan int, c *child) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case code := <-exited:
			t.Fatalf("gemq exited %d before serving %s; stderr:\n%s", code, url, c.stderr)
		default:
		}
		if r, err := http.Get(url); err == nil {
			var v json.RawMessage
			ok := r.StatusCode == 200 && json.NewDecoder(r.Body).Decode(&v) == nil
			r.Body.Close()
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer in 60s; stderr:\n%s", url, c.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
