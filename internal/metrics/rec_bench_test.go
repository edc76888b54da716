package metrics

import (
	"context"
	"testing"
	"time"

	"github.com/gemq-dev/gemq/internal/limiter"
)

// BenchmarkPermit is what the worker adds to each limiter decision.
func BenchmarkPermit(b *testing.B) {
	cfg, err := limiter.ParseConfig([]byte(quota))
	if err != nil {
		b.Fatal(err)
	}
	rec, err := New(NewLocal().Provider, nil, cfg)
	if err != nil {
		b.Fatal(err)
	}
	p := limiter.Permit{Scope: limiter.Scope{Project: "p", Model: "bench"}, Outcome: limiter.Granted, At: time.Now()}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		rec.Permit(ctx, "acquire", p)
	}
}
