package metrics

import (
	"context"

	"github.com/gemq-dev/gemq/internal/gemini"
	"github.com/gemq-dev/gemq/internal/limiter"
)

// Limiter is a *limiter.Limiter whose decisions and settled estimates are
// recorded; every other method is the limiter's own. The worker hands it
// to the lifecycle in place of the limiter.
type Limiter struct {
	*limiter.Limiter
	rec *Recorder
}

// WrapLimiter returns l recording on rec (nil: nothing recorded).
func WrapLimiter(l *limiter.Limiter, rec *Recorder) *Limiter { return &Limiter{Limiter: l, rec: rec} }

// Acquire is limiter.Limiter.Acquire, recorded (kind "acquire").
func (l *Limiter) Acquire(ctx context.Context, scope limiter.Scope, cost limiter.Cost) (limiter.Permit, error) {
	p, err := l.Limiter.Acquire(ctx, scope, cost)
	if err == nil {
		l.rec.Permit(ctx, "acquire", p)
	}
	return p, err
}

// Claim is limiter.Limiter.Claim, recorded (kind "claim").
func (l *Limiter) Claim(ctx context.Context, p limiter.Permit) (limiter.Permit, error) {
	np, err := l.Limiter.Claim(ctx, p)
	if err == nil {
		l.rec.Permit(ctx, "claim", np)
	}
	return np, err
}

// Release is limiter.Limiter.Release; a granted permit's admission no
// longer counts in this process's windows.
func (l *Limiter) Release(ctx context.Context, p limiter.Permit) error {
	err := l.Limiter.Release(ctx, p)
	if err == nil {
		l.rec.Released(p)
	}
	return err
}

// Settle is limiter.Limiter.Settle; the estimate's error is recorded.
func (l *Limiter) Settle(ctx context.Context, p limiter.Permit, actualInputTokens int64) error {
	l.rec.Estimate(ctx, p.Scope, p.Cost.InputTokens, actualInputTokens)
	return l.Limiter.Settle(ctx, p, actualInputTokens)
}

// Gemini is a *gemini.Client whose failed calls are recorded (429s by
// kind), under the scope of project and the call's model.
type Gemini struct {
	*gemini.Client
	project string
	rec     *Recorder
}

// WrapGemini returns c recording on rec for the quota project.
func WrapGemini(c *gemini.Client, project string, rec *Recorder) *Gemini {
	return &Gemini{Client: c, project: project, rec: rec}
}

// Generate is gemini.Client.Generate; a failure is classified and recorded.
func (g *Gemini) Generate(ctx context.Context, taskID, model string, r *gemini.Request) (*gemini.Response, error) {
	resp, err := g.Client.Generate(ctx, taskID, model, r)
	if err != nil && g.rec != nil {
		g.rec.Failure(ctx, limiter.Scope{Project: g.project, Model: model}, gemini.Classify(err))
	}
	return resp, err
}
