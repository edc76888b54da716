package bench

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestTheoreticalMin(t *testing.T) {
	for _, tc := range []struct {
		units, capacity int64
		period          time.Duration
		want            time.Duration
	}{
		{0, 10, time.Minute, 0},
		{1, 10, time.Minute, 0},
		{10, 10, time.Minute, 0},           // one burst
		{11, 10, time.Minute, time.Minute}, // the 11th waits one window
		{570, 57, time.Minute, 9 * time.Minute},
		{571, 57, time.Minute, 10 * time.Minute},
		{100, 0, time.Minute, -1},
	} {
		if got := TheoreticalMin(tc.units, tc.capacity, tc.period); got != tc.want {
			t.Errorf("TheoreticalMin(%d, %d, %v) = %v, want %v", tc.units, tc.capacity, tc.period, got, tc.want)
		}
	}
	if got := Capacity(60, 0.95); got != 57 {
		t.Errorf("Capacity(60, 0.95) = %d, want 57", got)
	}
}

// TestTheoreticalMinIsTight: a schedule that bursts capacity at 0, P, 2P, …
// finishes exactly at TheoreticalMin and its peak window is capacity.
func TestTheoreticalMinIsTight(t *testing.T) {
	const capacity, units = 7, 30
	p := time.Second
	t0 := time.Unix(1000, 0)
	var s []Sample
	for i := range units {
		s = append(s, Sample{At: t0.Add(time.Duration(i/capacity) * p), Units: 1})
	}
	if peak, _ := PeakWindow(s, p); peak != capacity {
		t.Errorf("peak = %d, want %d", peak, capacity)
	}
	if got, want := s[len(s)-1].At.Sub(t0), TheoreticalMin(units, capacity, p); got != want {
		t.Errorf("schedule ends at %v, TheoreticalMin = %v", got, want)
	}
}

// brutePeak checks every window (x-p, x] ending at a sample.
func brutePeak(s []Sample, p time.Duration) int64 {
	var best int64
	for _, end := range s {
		var sum int64
		for _, x := range s {
			if x.At.After(end.At.Add(-p)) && !x.At.After(end.At) {
				sum += x.Units
			}
		}
		best = max(best, sum)
	}
	return best
}

func TestPeakWindowMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	t0 := time.Unix(0, 0)
	for seed := range 200 {
		n := rng.IntN(60)
		s := make([]Sample, n)
		for i := range s {
			// Coarse instants so that equal times and exact window edges occur.
			s[i] = Sample{At: t0.Add(time.Duration(rng.IntN(40)) * 100 * time.Millisecond), Units: 1 + rng.Int64N(5)}
		}
		p := time.Duration(1+rng.IntN(10)) * 100 * time.Millisecond
		got, _ := PeakWindow(s, p)
		if want := brutePeak(s, p); got != want {
			t.Fatalf("case %d: PeakWindow = %d, brute force = %d (period %v, samples %v)", seed, got, want, p, s)
		}
	}
}

func TestPeakWindowEdges(t *testing.T) {
	t0 := time.Unix(0, 0)
	p := time.Second
	// Exactly one period apart: never in the same window (x-P, x].
	s := []Sample{{t0, 5}, {t0.Add(p), 5}}
	if got, _ := PeakWindow(s, p); got != 5 {
		t.Errorf("samples one period apart: peak %d, want 5", got)
	}
	s = append(s, Sample{t0.Add(p - 1), 1})
	if got, _ := PeakWindow(s, p); got != 6 {
		t.Errorf("peak %d, want 6", got)
	}
	if got, _ := PeakWindow(nil, p); got != 0 {
		t.Errorf("no samples: peak %d", got)
	}
}

func TestWindowRates(t *testing.T) {
	t0 := time.Unix(0, 0)
	s := []Sample{{t0, 2}, {t0.Add(500 * time.Millisecond), 3}, {t0.Add(1500 * time.Millisecond), 4}, {t0.Add(2500 * time.Millisecond), 1}}
	full, mean := WindowRates(s, time.Second)
	if diff := cmp.Diff([]int64{5, 4}, full); diff != "" {
		t.Errorf("full windows (-want +got):\n%s", diff)
	}
	if want := 10.0 / 2.5; mean != want {
		t.Errorf("mean per period = %v, want %v", mean, want)
	}
}

func TestQuantile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i))
	}
	for q, want := range map[float64]time.Duration{0.5: 50, 0.99: 99, 1: 100, 0: 1} {
		if got := Quantile(ds, q); got != want {
			t.Errorf("Quantile(%v) = %v, want %v", q, got, want)
		}
	}
}

func TestUpdateMarkdownKeepsOthersSections(t *testing.T) {
	m := Machine{NProc: 2, CPU: "cpu", GoVersion: "go1", OS: "linux/amd64"}
	at := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	limiterPart := "# gemq benchmarks\n\n## Limiter\n\n| callers | gemq |\n| 1 | 5 |\n"
	sec := func(v string) Section {
		return Section{ID: "rpm", Title: "RPM-bound", Command: "make bench", Rows: []Row{Check("ratio", v, "≤ 1.03", true)}}
	}
	doc := UpdateMarkdown(limiterPart, m, at, []Section{sec("1.01")})
	if !strings.HasPrefix(doc, limiterPart) {
		t.Fatalf("limiter section changed:\n%s", doc)
	}
	doc2 := UpdateMarkdown(doc, m, at, []Section{sec("1.02")})
	if strings.Contains(doc2, "1.01") || !strings.Contains(doc2, "| ratio | 1.02 | ≤ 1.03 | yes |") {
		t.Fatalf("section not replaced:\n%s", doc2)
	}
	if strings.Count(doc2, beginMarker("rpm")) != 1 || !strings.HasPrefix(doc2, limiterPart) {
		t.Fatalf("bad update:\n%s", doc2)
	}
	if !strings.Contains(doc2, "Command: `make bench` — machine: nproc=2, CPU cpu, go1, linux/amd64") {
		t.Fatalf("command/machine line missing:\n%s", doc2)
	}
}
