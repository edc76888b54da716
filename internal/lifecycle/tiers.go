package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gemq-dev/gemq/internal/gemini"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/tier"
)

// tierOf is the tier the task calls at: its envelope's, with auto (a task
// published straight to the topic) resolved by its deadline; batch is
// standard without a Batch API (Vertex AI).
func (m *Machine) tierOf(r *run) tier.Tier {
	t := tier.ForTask(tier.Tier(r.env.ServiceTier), m.now(), r.env.DeadlineTime())
	if t == tier.Batch && !m.batchReady() {
		return tier.Standard
	}
	return t
}

// callTimeout bounds one Gemini call at tier t: flex answers in minutes.
func (m *Machine) callTimeout(t tier.Tier) time.Duration {
	if t == tier.Flex {
		return m.opts.FlexTimeout
	}
	return m.opts.GeminiTimeout
}

// callLease is the lease held over a call at tier t: the call's timeout
// plus the margin the configured lease keeps over the standard timeout.
func (m *Machine) callLease(t tier.Tier) time.Duration {
	return m.opts.Lease + m.callTimeout(t) - m.opts.GeminiTimeout
}

// shed reports whether a failed call at tier t was shed by Gemini: a flex
// request refused for capacity (503 UNAVAILABLE, the overloaded answer) or
// not answered within the flex timeout. Flex is best effort
// (https://ai.google.dev/gemini-api/docs/optimization, read 2026-12-02):
// such a request is not a failure of the task.
func shed(t tier.Tier, f gemini.Failure, err error) bool {
	return t == tier.Flex && (f.Code == 503 || f.Code == 504 || errors.Is(err, context.DeadlineExceeded))
}

// deferShed defers a shed flex task, without counting a failed attempt,
// after the capacity back-off; once that would pass the task's deadline
// the task fails, naming the sheds.
func (m *Machine) deferShed(ctx context.Context, r *run, f gemini.Failure) Outcome {
	at := m.now().Add(backoff(r.env.Deferrals+1, m.opts.CapacityBase, m.opts.CapacityMax))
	if d := r.env.DeadlineTime(); !d.IsZero() && at.After(d) {
		return m.finishFailed(ctx, r, failure{code: 504, status: "DEADLINE_EXCEEDED",
			message: fmt.Sprintf("flex: Gemini shed the request (last: %d %s) and the job's deadline %s leaves no time for another try; resubmit at standard",
				f.Code, f.Status, r.env.Deadline)})
	}
	r.log.InfoContext(ctx, "flex request shed by Gemini: deferred, not a failure", "http_code", f.Code)
	return m.deferTask(ctx, r, deferral{at: at, why: fmt.Sprintf("flex shed (%d %s)", f.Code, f.Status)})
}

// usage is what the store sums for a successful call at tier asked: the
// tier that served it (from the response; asked when Gemini did not say,
// as on Vertex AI, then no downgrade is known) and its tokens.
func usage(asked tier.Tier, resp *gemini.Response) store.Usage {
	u := store.Usage{Tier: string(asked), Input: resp.PromptTokens, Cached: resp.CachedTokens,
		Output: resp.CandidatesTokens, Thinking: resp.ThoughtsTokens}
	switch served := tier.Tier(resp.ServiceTier); served {
	case tier.Standard, tier.Flex, tier.Priority:
		u.Tier, u.Asked = string(served), string(asked)
	}
	return u
}
