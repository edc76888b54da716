package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gemq-dev/gemq/infra/geminisim"
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
	// Tokenizer is how the stand-in counts tokens ("": the stand-in's zero value, see
	// geminisim.Options.Tokenizer); make bench sets geminisim.IndependentTokens.
	Tokenizer geminisim.Tokenizer
	// DSQ puts a hidden capacity (Vertex AI's Dynamic Shared Quota) in front of the limits.
	DSQ *geminisim.DSQ
}

// GeminiStats are the stand-in's statistics over its request log (zero with
// the real Gemini); violations are checked against the limits themselves.
type GeminiStats = geminisim.Stats

// geminiSide is either the stand-in (served by the stack, swappable) or the
// real Gemini API / Vertex AI.
type geminiSide struct {
	url    string            // stand-in base URL; "" for the real service
	env    map[string]string // the functions' Gemini variables
	quotas string            // GEMQ_QUOTAS
	real   string            // "", "Gemini API" or "Vertex AI"
	sim    atomic.Pointer[geminisim.Server]
	hs     *http.Server
	limits geminisim.Limits
	minute time.Duration
	model  string
}

// startGemini starts the stand-in, or configures the real Gemini when the
// user's environment has GEMINI_API_KEY or GOOGLE_GENAI_USE_VERTEXAI=true.
func startGemini(ctx context.Context, o Options, logw io.Writer) (*geminiSide, error) {
	getenv := o.Getenv
	g := &geminiSide{env: map[string]string{}, model: o.Model}
	vertex := strings.EqualFold(getenv("GOOGLE_GENAI_USE_VERTEXAI"), "true")
	if key := getenv("GEMINI_API_KEY"); key != "" || vertex {
		quotas, err := realQuotas(getenv, o.Model)
		if err != nil {
			return nil, err
		}
		g.quotas = quotas
		g.env["GOOGLE_GEMINI_BASE_URL"] = getenv("GOOGLE_GEMINI_BASE_URL")
		if vertex {
			g.real = "Vertex AI"
			g.env["GOOGLE_GENAI_USE_VERTEXAI"] = "true"
			g.env["GOOGLE_CLOUD_LOCATION"] = getenv("GOOGLE_CLOUD_LOCATION")
			g.env["GEMINI_API_KEY"] = ""
		} else {
			g.real = "Gemini API"
			g.env["GEMINI_API_KEY"] = key
			g.env["GOOGLE_GENAI_USE_VERTEXAI"] = ""
		}
		return g, nil
	}

	g.limits = geminisim.Limits{RPM: o.RPM, TPM: o.TPM, RPD: o.RPD}
	g.minute = o.Minute
	g.quotas = quotasJSON(o.Model, o.RPM, o.TPM, o.RPD, o.Minute, o.Safety, o.Guard)
	g.sim.Store(newSim(o.Model, g.limits, o.Minute, o.Gemini))
	addr := o.GeminiAddr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("gemini stand-in listen %s: %w", addr, err)
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
	})
}

// realQuotas returns the user's quota configuration for the real Gemini
// (GEMQ_QUOTAS or GEMQ_QUOTAS_FILE), else a conservative default for model:
// the free tier's 10 requests and 250,000 input tokens per minute, 250
// requests per day (check your project's quota page and set GEMQ_QUOTAS).
func realQuotas(getenv func(string) string, model string) (string, error) {
	if q := getenv("GEMQ_QUOTAS"); q != "" {
		return q, nil
	}
	if f := getenv("GEMQ_QUOTAS_FILE"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("read GEMQ_QUOTAS_FILE: %w", err)
		}
		return string(b), nil
	}
	return quotasJSON(model, 10, 250_000, 250, time.Minute, 0.95, 0), nil
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
