package main

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/gemq-dev/gemq/infra/stack"
	"github.com/gemq-dev/gemq/internal/config"
	"github.com/gemq-dev/gemq/internal/limiter"
)

// assumedQuota is what gemq run assumes of the real Gemini's quota for
// model: the user's GEMQ_QUOTAS / GEMQ_QUOTAS_FILE when set and readable,
// else the free tier the stack assumes (10 requests/min, 250/day). rpm and
// rpd are what the limiter admits (limit × safety); 0 means no such
// dimension. from says where the figures come from.
func assumedQuota(getenv func(string) string, project, model string) (rpm, rpd int64, from string) {
	rpm, rpd, from = int64(math.Floor(10*0.95)), int64(math.Floor(250*0.95)), "the free tier gemq assumes without GEMQ_QUOTAS"
	if getenv("GEMQ_QUOTAS") == "" && getenv("GEMQ_QUOTAS_FILE") == "" {
		return rpm, rpd, from
	}
	cfg, err := config.LoadQuotas(getenv)
	if err != nil {
		return rpm, rpd, from // the stack names the variable; the guard stays on the safe side
	}
	q, ok := cfg.Quota(limiter.Scope{Project: project, Model: model})
	if !ok {
		return rpm, rpd, from
	}
	rpm, rpd = 0, 0
	for _, d := range q.Dimensions {
		if d.Unit != limiter.Requests {
			continue
		}
		c := q.Capacity(d)
		switch {
		case d.Daily():
			rpd = c
		case d.Period > 0:
			if perMin := int64(float64(c) * float64(time.Minute) / float64(d.Period)); rpm == 0 || perMin < rpm {
				rpm = perMin
			}
		}
	}
	return rpm, rpd, "your quota configuration"
}

// guardRealGemini stops gemq run from spending real Gemini quota by
// accident (a GEMINI_API_KEY left in the shell): with the real Gemini, a
// job larger than one quota minute's requests needs --real-gemini; without
// it gemq says what the job would spend and exits 2.
func guardRealGemini(e env, f *jobFile, model string, allowed bool) error {
	which, v := "", ""
	switch {
	case strings.EqualFold(e.getenv("GOOGLE_GENAI_USE_VERTEXAI"), "true"):
		which, v = "Vertex AI", "GOOGLE_GENAI_USE_VERTEXAI=true"
	case e.getenv("GEMINI_API_KEY") != "":
		which, v = "Gemini API", "GEMINI_API_KEY"
	default:
		return nil
	}
	if allowed {
		return nil
	}
	project := stack.DefaultProject
	if which == "Vertex AI" && e.getenv("GOOGLE_CLOUD_PROJECT") != "" {
		project = e.getenv("GOOGLE_CLOUD_PROJECT")
	}
	rpm, rpd, from := assumedQuota(e.getenv, project, model)
	n := int64(f.requests)
	if rpm > 0 && n <= rpm {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s is set, so this job would go to the real %s: %d requests to %s", v, which, n, model)
	if rpd > 0 {
		fmt.Fprintf(&b, ", %.0f%% of the %d requests a day gemq may use (%s)", 100*float64(n)/float64(rpd), rpd, from)
	}
	if rpm > 0 {
		fmt.Fprintf(&b, ", taking at least %s at %d requests a minute", fmtDuration(time.Duration(float64(n)/float64(rpm)*float64(time.Minute))), rpm)
	}
	fmt.Fprintf(&b, ".\n  Pass --real-gemini to spend that, unset %s to use the local stand-in", strings.TrimSuffix(v, "=true"))
	if rpm > 0 {
		fmt.Fprintf(&b, ", or --file a job of at most %d requests", rpm)
	}
	return &exitError{code: exitUsage, msg: b.String()}
}
