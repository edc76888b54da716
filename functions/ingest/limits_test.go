package ingest

import (
	"context"
	"testing"

	"github.com/gemq-dev/gemq/internal/limiter"
)

func TestQuotaLimitsTakesTheSmallerOfModelAndQuota(t *testing.T) {
	cfg, err := limiter.ParseConfig([]byte(`{"scopes": [
		{"project": "*", "model": "gemini-2.5-flash", "dimensions": [{"name": "rpm", "unit": "requests", "limit": 10, "period": "1m"}]},
		{"project": "*", "model": "gemini-2.0-flash", "dimensions": [{"name": "tpm", "unit": "input_tokens", "limit": 1000, "period": "1m"}]},
		{"project": "*", "model": "local-model", "dimensions": [{"name": "rpm", "unit": "requests", "limit": 10, "period": "1m"}]}
	]}`))
	if err != nil {
		t.Fatal(err)
	}
	q := quotaLimits{cfg: cfg, project: "p"}
	tests := []struct {
		model    string
		want     int64
		wantWhat string
	}{
		{"gemini-2.5-flash", 1_048_576, "the model's input token limit"}, // no token quota: the model's own limit
		{"gemini-2.0-flash", 950, "the tpm quota's capacity"},            // floor(0.95 × 1000) < 1,048,576
		{"local-model", 0, ""}, // neither known
	}
	for _, tt := range tests {
		got, what, err := q.InputTokenLimit(context.Background(), tt.model)
		if err != nil || got != tt.want || what != tt.wantWhat {
			t.Errorf("InputTokenLimit(%q) = %d, %q, %v; want %d, %q", tt.model, got, what, err, tt.want, tt.wantWhat)
		}
	}
}
