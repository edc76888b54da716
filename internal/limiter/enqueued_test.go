package limiter

import (
	"context"
	"testing"
	"time"

	"github.com/gemq-dev/gemq/internal/redistest"
)

func TestEnqueuedHoldsAndReleases(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	e := NewEnqueued(rdb)
	s := Scope{Project: "p", Model: "m"}
	must := func(holder string, tokens int64, want bool, wantHeld int64) {
		t.Helper()
		r, err := e.Acquire(ctx, s, holder, tokens, 100, time.Hour)
		if err != nil || r.Granted != want || r.Held != wantHeld {
			t.Fatalf("Acquire(%s, %d) = %+v %v, want granted %v held %d", holder, tokens, r, err, want, wantHeld)
		}
	}
	must("a", 60, true, 60)
	must("a", 60, true, 60) // idempotent: a holds already
	must("b", 50, false, 60)
	must("c", 40, true, 100)
	if err := e.Release(ctx, s, "a"); err != nil {
		t.Fatal(err)
	}
	must("b", 50, true, 90)
	// Alone, a holder larger than the limit is granted rather than never.
	other := Scope{Project: "p", Model: "other"}
	if r, err := e.Acquire(ctx, other, "big", 500, 100, time.Hour); err != nil || !r.Granted {
		t.Fatalf("lone big holder = %+v %v", r, err)
	}
	// A permit lapses after its hold.
	if _, err := e.Acquire(ctx, Scope{Project: "p", Model: "lapse"}, "x", 100, 100, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(80 * time.Millisecond)
	if r, err := e.Acquire(ctx, Scope{Project: "p", Model: "lapse"}, "y", 100, 100, time.Hour); err != nil || !r.Granted || r.Held != 100 {
		t.Fatalf("after the lapse = %+v %v, want y granted alone", r, err)
	}
}
