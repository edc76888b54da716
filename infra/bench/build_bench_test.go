package bench

import (
	"context"
	"testing"

	"github.com/gemq-dev/gemq/internal/job"
)

// BenchmarkBuildTPMJob is ingest's validation of the TPM-bound utilisation
// job (the body make bench submits: 3,060 prose requests of 200-800 tokens,
// 10.9 MB), without HTTP, Redis or Pub/Sub, with an input limit to check as
// the deployed ingest has. `-cpu 1,2` shows one core and two.
func BenchmarkBuildTPMJob(b *testing.B) {
	var o PipelineOptions
	for _, s := range DefaultScale.Scenarios() {
		if s.Name == "tpm" {
			o = s
		}
	}
	body, _, err := ContentJob(o.Content, o.Tasks, o.MinTokens, o.MaxTokens, o.Seed)
	if err != nil {
		b.Fatal(err)
	}
	r := job.Rules{Allowed: []string{Model}, MaxRequests: o.Tasks, Limits: inputLimit(1 << 20)}
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := r.Build(context.Background(), job.JSONL, body, job.Params{JobID: "bench-tpm", Model: Model}); err != nil {
			b.Fatal(err)
		}
	}
}

// inputLimit is a job.InputLimits with one limit for every model.
type inputLimit int64

func (l inputLimit) InputTokenLimit(context.Context, string) (int64, string, error) {
	return int64(l), "the benchmark's limit", nil
}
