package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gemq-dev/gemq/infra/geminisim"
	"github.com/gemq-dev/gemq/internal/config"
	"github.com/gemq-dev/gemq/internal/limiter"
)

// GeminiOptions configures the Gemini stand-in's behaviour (not its limits,
// which are Options.RPM/TPM/RPD).
type GeminiOptions struct {
	// Latency of each answer, in stand-in time (scaled with Minute).
	Latency geminisim.Latency
	// Faults injected into generateContent answers (5xx, hangs, resets).
	Faults geminisim.Faults
	// CapacityRate is the probability of a 429 without details.
	CapacityRate float64
	// TokenSkew makes token counts differ from gemq's estimate by up to ±TokenSkew.
	TokenSkew float64
	// Seed makes the random choices reproducible (0: the stand-in's default).
	Seed uint64
	// Tokenizer is how the stand-in counts tokens ("": geminisim.IndependentTokens, its own rule).
	Tokenizer geminisim.Tokenizer
	// DSQ puts a hidden capacity (Vertex AI's Dynamic Shared Quota) in front of the limits.
	DSQ *geminisim.DSQ
	// Tiers set the flex shed rate and the priority limit.
	Tiers geminisim.Tiers
}

// GeminiStats are the stand-in's statistics over its request log (zero with
// the real Gemini); violations are checked against the limits themselves.
type GeminiStats = geminisim.Stats

// geminiSide is either the stand-in (served by the stack, swappable) or the
// real Gemini API / Vertex AI.
type geminiSide struct {
	url    string            // stand-in base URL; "" for the real service
	env    map[string]string // the functions' Gemini variables
	quotas string            // the quota document the limiter enforces
	// quotasInline and quotasFile are the functions' GEMQ_QUOTAS and
	// GEMQ_QUOTAS_FILE: the user's file is passed on as a file, so that
	// the functions name the variable the user set.
	quotasInline, quotasFile string
	real                     string // "", "Gemini API" or "Vertex AI"
	sim                      atomic.Pointer[geminisim.Server]
	hs                       *http.Server
	limits                   geminisim.Limits
	minute                   time.Duration
	model                    string
}

// geminiPlan is the Gemini side the user's environment asks for, checked
// before anything starts.
type geminiPlan struct {
	real                     string // "", "Gemini API" or "Vertex AI"
	realVar                  string // the variable choosing it
	quotas                   string // the quota document
	quotasInline, quotasFile string // the functions' GEMQ_QUOTAS, GEMQ_QUOTAS_FILE
	notes                    []string
}

// planGemini decides between the stand-in and the real Gemini (the user's
// GEMINI_API_KEY or GOOGLE_GENAI_USE_VERTEXAI=true) and checks the quota
// variables as the functions will (config.LoadQuotas: exactly one of
// GEMQ_QUOTAS and GEMQ_QUOTAS_FILE, or neither here, meaning a default).
// With the stand-in the stack's own limits apply; a quota variable the user
// set is still checked (a typo should not wait for the day it matters) and
// a note says it is not used.
func planGemini(o Options) (*geminiPlan, error) {
	getenv := o.Getenv
	p := &geminiPlan{}
	switch {
	case strings.EqualFold(getenv("GOOGLE_GENAI_USE_VERTEXAI"), "true"):
		p.real, p.realVar = "Vertex AI", "GOOGLE_GENAI_USE_VERTEXAI"
	case getenv("GEMINI_API_KEY") != "":
		p.real, p.realVar = "Gemini API", "GEMINI_API_KEY"
	}
	inline, file := strings.TrimSpace(getenv("GEMQ_QUOTAS")), strings.TrimSpace(getenv("GEMQ_QUOTAS_FILE"))
	if inline == "" && file == "" {
		if p.real != "" {
			p.quotas = quotasJSON(o.Model, 10, 250_000, 250, time.Minute, 0.95, 0)
			p.quotasInline = p.quotas
		}
		return p, nil
	}
	v := "GEMQ_QUOTAS"
	if inline == "" {
		v = "GEMQ_QUOTAS_FILE"
	}
	q, err := config.LoadQuotas(getenv)
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) && len(ce.Problems) == 1 {
			v = ce.Problems[0].Var
		}
		return nil, &EnvError{Var: v, Problem: strings.TrimPrefix(err.Error(), "config: "+v+": "),
			Fix: "fix it (README: Quota configuration), or unset it"}
	}
	if p.real == "" {
		p.notes = append(p.notes, fmt.Sprintf("%s is set but not used: the Gemini stand-in enforces the stack's own limits (--rpm, --tpm, --rpd)", v))
		return p, nil
	}
	if _, ok := q.Quota(limiter.Scope{Project: o.Project, Model: o.Model}); !ok {
		return nil, &EnvError{Var: v, Problem: fmt.Sprintf("no quota for model %s in project %s (it covers %s)", o.Model, o.Project, strings.Join(q.Models(), ", ")),
			Fix: fmt.Sprintf(`add a scope {"project": "*", "model": %q, ...}, or choose a model it covers (--model)`, o.Model)}
	}
	if inline != "" {
		p.quotas, p.quotasInline = inline, inline
	} else {
		b, _ := os.ReadFile(file) // LoadQuotas read it a moment ago
		p.quotas, p.quotasFile = string(b), file
		if abs, err := filepath.Abs(file); err == nil {
			p.quotasFile = abs
		}
	}
	return p, nil
}

// part describes the Gemini side for Stack.Parts.
func (p *geminiPlan) part(url string) Part {
	if p.real == "" {
		return Part{Name: "Gemini", Local: true, Where: url + " (gemq's stand-in, in this process)"}
	}
	return Part{Name: "Gemini", Where: "the real " + p.real, Var: p.realVar}
}

// startGemini starts the stand-in, or configures the real Gemini as plan
// says.
func startGemini(ctx context.Context, o Options, plan *geminiPlan, logw io.Writer) (*geminiSide, error) {
	getenv := o.Getenv
	g := &geminiSide{env: map[string]string{}, model: o.Model, real: plan.real,
		quotas: plan.quotas, quotasInline: plan.quotasInline, quotasFile: plan.quotasFile}
	if plan.real != "" {
		g.env["GOOGLE_GEMINI_BASE_URL"] = getenv("GOOGLE_GEMINI_BASE_URL")
		if plan.real == "Vertex AI" {
			g.env["GOOGLE_GENAI_USE_VERTEXAI"] = "true"
			g.env["GOOGLE_CLOUD_LOCATION"] = getenv("GOOGLE_CLOUD_LOCATION")
			g.env["GEMINI_API_KEY"] = ""
		} else {
			g.env["GEMINI_API_KEY"] = getenv("GEMINI_API_KEY")
			g.env["GOOGLE_GENAI_USE_VERTEXAI"] = ""
		}
		return g, nil
	}

	g.limits = geminisim.Limits{RPM: o.RPM, TPM: o.TPM, RPD: o.RPD}
	g.minute = o.Minute
	g.quotas = quotasJSON(o.Model, o.RPM, o.TPM, o.RPD, o.Minute, o.Safety, o.Guard)
	g.quotasInline, g.quotasFile = g.quotas, ""
	g.sim.Store(newSim(o.Model, g.limits, o.Minute, o.Gemini))
	addr := o.GeminiAddr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, &ListenError{Part: "Gemini stand-in", Option: "GeminiAddr", Addr: addr, Err: err}
	}
	g.hs = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { g.sim.Load().ServeHTTP(w, r) }),
		ReadHeaderTimeout: 10 * time.Second,
	}
	g.url = "http://" + lis.Addr().String()
	go func() {
		if err := g.hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(logw, "gemini stand-in: %v\n", err)
		}
	}()
	g.env["GEMINI_API_KEY"] = LocalAPIKey
	g.env["GOOGLE_GEMINI_BASE_URL"] = g.url
	g.env["GOOGLE_GENAI_USE_VERTEXAI"] = ""
	return g, nil
}

func newSim(model string, lim geminisim.Limits, minute time.Duration, o GeminiOptions) *geminisim.Server {
	return geminisim.New(geminisim.Options{
		Tokenizer:    o.Tokenizer,
		DSQ:          o.DSQ,
		APIKey:       LocalAPIKey,
		Models:       []geminisim.Model{{ID: model, Limits: lim}},
		Minute:       minute,
		Latency:      o.Latency,
		Faults:       o.Faults,
		CapacityRate: o.CapacityRate,
		TokenSkew:    o.TokenSkew,
		Seed:         o.Seed,
		Tiers:        o.Tiers,
	})
}

func (g *geminiSide) stats() GeminiStats {
	if sim := g.sim.Load(); sim != nil {
		return sim.Stats(1)
	}
	return GeminiStats{}
}

func (g *geminiSide) stop() {
	if g.hs != nil {
		g.hs.Close()
	}
	if sim := g.sim.Load(); sim != nil {
		sim.Close()
	}
}

// RealGemini names the real service in use ("Gemini API", "Vertex AI"), or
// "" when the stack runs the stand-in.
func (s *Stack) RealGemini() string { return s.gemini.real }

// GeminiStandIn returns the stand-in (nil with the real Gemini). Its log is
// the ground truth for what Gemini received.
func (s *Stack) GeminiStandIn() *geminisim.Server { return s.gemini.sim.Load() }

// ResetGemini replaces the stand-in with a fresh one (empty log and quota
// windows) behaving as o says, at the same URL and limits. The functions
// keep their configuration; only Gemini's behaviour changes. It is meant for
// tests that run several scenarios on one Stack; calls in flight finish on
// the old stand-in.
func (s *Stack) ResetGemini(o GeminiOptions) error {
	g := s.gemini
	old := g.sim.Load()
	if old == nil {
		return errors.New("stack: ResetGemini with the real Gemini")
	}
	g.sim.Store(newSim(g.model, g.limits, g.minute, o))
	old.Close()
	return nil
}
