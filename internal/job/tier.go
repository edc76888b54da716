package job

import (
	"fmt"
	"time"

	"github.com/gemq-dev/gemq/internal/task"
	"github.com/gemq-dev/gemq/internal/tier"
)

// Tiers are a job's service tier settings.
type Tiers struct {
	// Asked is the tier the job named (Standard when it named none).
	Asked tier.Tier
	// Chosen is the tier every task calls at: Asked, or for Auto the
	// tier it resolved to.
	Chosen tier.Tier
	// Reason says why Auto chose Chosen; empty otherwise.
	Reason string
	// Deadline is the job's deadline; zero when none was given.
	Deadline time.Time
}

// envelopeTier is the tier written into the envelopes the job's hash
// covers: the one asked for ("" for the default), so a retried submission
// of an auto job hashes the same whatever auto picks the second time.
func (t Tiers) envelopeTier() string {
	if t.Asked == tier.Standard {
		return ""
	}
	return string(t.Asked)
}

func (t Tiers) deadlineText() string {
	if t.Deadline.IsZero() {
		return ""
	}
	return t.Deadline.UTC().Format(time.RFC3339Nano)
}

// tiers checks the job's service_tier and deadline.
func (r Rules) tiers(s spec) (Tiers, *Error) {
	asked, err := tier.Parse(s.tier)
	if err != nil {
		return Tiers{}, invalid("service_tier", "service_tier", err.Error())
	}
	t := Tiers{Asked: asked, Chosen: asked}
	if s.deadline != "" {
		d, err := time.Parse(time.RFC3339Nano, s.deadline)
		if err != nil {
			return Tiers{}, invalid("deadline", "deadline", fmt.Sprintf("deadline must be an RFC 3339 time such as 2026-12-03T06:00:00Z, got %.64q", s.deadline))
		}
		if !d.After(r.now()) {
			return Tiers{}, invalid("deadline", "deadline", fmt.Sprintf("deadline %s has passed", s.deadline))
		}
		t.Deadline = d
	} else if asked == tier.Auto {
		return Tiers{}, invalid("deadline", "deadline", "service_tier auto needs a deadline (an RFC 3339 time such as 2026-12-03T06:00:00Z): gemq picks the cheapest tier expected to finish by it")
	}
	return t, nil
}

// resolveAuto picks the tier of an auto job, now that its size is known,
// and rewrites its envelopes with it. The job's hash stays the one of the
// envelopes as asked (envelopeTier).
func (r Rules) resolveAuto(j *Job) *Error {
	if j.Tiers.Asked != tier.Auto {
		return nil
	}
	var perMinute int64
	if r.PerMinute != nil {
		perMinute = r.PerMinute(j.Model)
	}
	c := tier.Choose(r.now(), j.Tiers.Deadline, len(j.Tasks), perMinute)
	j.Tiers.Chosen, j.Tiers.Reason = c.Tier, c.Reason
	for i := range j.Tasks {
		env, err := task.Decode(j.Tasks[i].Data)
		if err == nil {
			env.ServiceTier = string(c.Tier)
			j.Tasks[i].Data, err = task.Encode(env)
		}
		if err != nil {
			return &Error{Kind: Invalid, Field: "service_tier", Reason: "service_tier", Message: "resolving service_tier auto: " + err.Error()}
		}
	}
	return nil
}

func (r Rules) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}
