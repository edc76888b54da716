package limiter

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestUsage reads the limits, the daily counter and the queue of reserved
// slots as the script holds them, across a reservation's slot.
func TestUsage(t *testing.T) {
	f := newFixture(t, `{"safety": 1, "horizon": "5s", "guard": "40ms", "scopes": [
  {"project": "*", "model": "m", "dimensions": [
    {"name": "rpm", "unit": "requests", "limit": 3, "period": "1s"},
    {"name": "rpd", "unit": "requests", "limit": 1000, "per": "pacific_day"},
    {"name": "tpm", "unit": "input_tokens", "limit": 100, "period": "1s"}]}]}`)
	ctx := context.Background()
	usage := func() Usage {
		t.Helper()
		u, err := f.l.Usage(ctx, scopeA)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	dims := func(rpd int64) []DimensionUsage {
		return []DimensionUsage{
			{Name: "rpm", Unit: Requests, Limit: 3, Configured: 3},
			{Name: "rpd", Unit: Requests, Daily: true, Used: rpd, Limit: 1000, Configured: 1000},
			{Name: "tpm", Unit: InputTokens, Limit: 100, Configured: 100},
		}
	}
	if diff := cmp.Diff(Usage{At: f.ms(0), Dimensions: dims(0)}, usage()); diff != "" {
		t.Errorf("empty scope (-want +got):\n%s", diff)
	}
	var last Permit
	for i := range 8 {
		p := f.acquire(t, Cost{Requests: 1, InputTokens: 10})
		if want := Granted; i >= 3 {
			want = Reserved
			last = p
			if p.Outcome != want {
				t.Fatalf("permit %d: %s, want %s", i, p.Outcome, want)
			}
		} else if p.Outcome != want {
			t.Fatalf("permit %d: %s, want %s", i, p.Outcome, want)
		}
	}
	// Three granted now, three reserved a window (1040ms) later, spaced
	// 43ms apart (1040ms / 3 / 8), two a window after that; the daily
	// counter holds all eight.
	want := Usage{At: f.ms(0), Dimensions: dims(8), Reserved: 5, LastSlot: last.At}
	if diff := cmp.Diff(want, usage()); diff != "" {
		t.Errorf("busy scope (-want +got):\n%s", diff)
	}
	// Past the first reserved slots: two remain ahead.
	f.clock.Add(1200 * time.Millisecond)
	want = Usage{At: f.ms(0), Dimensions: dims(8), Reserved: 2, LastSlot: last.At}
	if diff := cmp.Diff(want, usage()); diff != "" {
		t.Errorf("a window later (-want +got):\n%s", diff)
	}
	// A reading bounded to 1 reservation stops early and says so.
	f.l.maxWalk = 1
	if u := usage(); !u.Partial || u.Reserved != 1 {
		t.Errorf("bounded reading: partial %v, reserved %d; want true, 1", u.Partial, u.Reserved)
	}
	if _, err := f.l.Usage(ctx, Scope{Project: "p", Model: "other"}); err == nil {
		t.Error("Usage of an unknown scope: no error")
	}
}
