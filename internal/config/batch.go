package config

import "time"

// Batch configures the Batch tier (service_tier batch): how the worker
// groups batch-tier tasks into Gemini Batch API jobs and follows them.
type Batch struct {
	// Collect is how long a group stays open for more tasks after its
	// first one before it is sealed and sent. GEMQ_BATCH_COLLECT, default
	// 60s.
	Collect time.Duration
	// PollMin and PollMax bound the back-off between two looks at a
	// running Batch API job. GEMQ_BATCH_POLL_MIN and GEMQ_BATCH_POLL_MAX,
	// defaults 30s and 10m.
	PollMin, PollMax time.Duration
	// MaxEntries bounds the tasks of one group. GEMQ_BATCH_MAX_ENTRIES,
	// default 10000.
	MaxEntries int64
	// MaxBytes bounds the summed envelope bytes of one group (they wait in
	// Redis until the group ends). GEMQ_BATCH_MAX_BYTES, default 64 MiB.
	MaxBytes int64
	// InlineBytes is the size up to which a group is sent inline; a larger
	// one is uploaded as a JSONL file with the Files API. The Batch API
	// takes inline requests "under 20MB" in total
	// (https://ai.google.dev/gemini-api/docs/batch-mode, read 2026-12-03).
	// GEMQ_BATCH_INLINE_BYTES, default 19,000,000 (room for the request's
	// own JSON around the entries).
	InlineBytes int64
	// EnqueuedTokens is the per-model limit of input tokens held by
	// pending or running batches ("Batch enqueued tokens" in
	// https://ai.google.dev/gemini-api/docs/rate-limits, read 2026-12-03;
	// e.g. 3,000,000 for gemini-2.5-flash on Tier 1), a limiter dimension of
	// its own: a group is sent only when its tokens fit.
	// GEMQ_BATCH_ENQUEUED_TOKENS, default 3,000,000.
	EnqueuedTokens int64
}

// Batch defaults.
const (
	DefaultBatchCollect        = 60 * time.Second
	DefaultBatchPollMin        = 30 * time.Second
	DefaultBatchPollMax        = 10 * time.Minute
	DefaultBatchMaxEntries     = 10_000
	DefaultBatchMaxBytes       = 64 << 20
	DefaultBatchInlineBytes    = 19_000_000
	DefaultBatchEnqueuedTokens = 3_000_000
)

func loadBatch(duration func(string, time.Duration) time.Duration, integer func(string, int64, int64, int64) int64, ps *problems) Batch {
	b := Batch{
		Collect:        duration("GEMQ_BATCH_COLLECT", DefaultBatchCollect),
		PollMin:        duration("GEMQ_BATCH_POLL_MIN", DefaultBatchPollMin),
		PollMax:        duration("GEMQ_BATCH_POLL_MAX", DefaultBatchPollMax),
		MaxEntries:     integer("GEMQ_BATCH_MAX_ENTRIES", DefaultBatchMaxEntries, 1, 1_000_000),
		MaxBytes:       integer("GEMQ_BATCH_MAX_BYTES", DefaultBatchMaxBytes, 1, 2<<30),
		InlineBytes:    integer("GEMQ_BATCH_INLINE_BYTES", DefaultBatchInlineBytes, 1, 20_000_000),
		EnqueuedTokens: integer("GEMQ_BATCH_ENQUEUED_TOKENS", DefaultBatchEnqueuedTokens, 1, 1<<50),
	}
	if b.PollMax < b.PollMin {
		ps.add("GEMQ_BATCH_POLL_MAX", "%v must not be shorter than GEMQ_BATCH_POLL_MIN (%v)", b.PollMax, b.PollMin)
	}
	return b
}
