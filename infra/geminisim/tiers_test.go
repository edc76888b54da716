package geminisim_test

import (
	"context"
	"net/http"
	"testing"

	"google.golang.org/genai"

	"github.com/gemq-dev/gemq/infra/geminisim"
	"github.com/gemq-dev/gemq/internal/gemini"
)

// gemqClient is gemq's own Gemini client (the real genai client inside) on srv.
func gemqClient(t *testing.T, srv *geminisim.Server) *gemini.Client {
	t.Helper()
	c, err := gemini.NewClient(context.Background(), gemini.Config{APIKey: "k", BaseURL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func tierRequest(t *testing.T, tier string) *gemini.Request {
	t.Helper()
	r, err := gemini.ParseRequest([]byte(`{"contents":[{"parts":[{"text":"Classify this."}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	r.ServiceTier = tier
	return r
}

func TestTierEchoedAndPriorityDowngraded(t *testing.T) {
	srv, _ := start(t, geminisim.Options{Tiers: geminisim.Tiers{PriorityRPM: 2}})
	c := gemqClient(t, srv)
	var served []string
	for _, tier := range []string{"", "flex", "priority", "priority", "priority"} {
		resp, err := c.Generate(t.Context(), "t-"+tier, model, tierRequest(t, tier))
		if err != nil {
			t.Fatalf("tier %q: %v", tier, err)
		}
		served = append(served, resp.ServiceTier)
	}
	want := []string{"standard", "flex", "priority", "priority", "standard"}
	for i := range want {
		if served[i] != want[i] {
			t.Fatalf("served tiers = %v, want %v (the third priority call within a minute is over the limit of 2)", served, want)
		}
	}
	st := srv.Stats(1)
	if st.Downgrades != 1 || st.Served["priority"] != 2 {
		t.Errorf("stats: %d downgrades, served %v; want 1 and 2 at priority", st.Downgrades, st.Served)
	}
	for _, e := range srv.Log() {
		if e.Tier == "" {
			t.Errorf("log entry without its asked tier: %+v", e)
		}
	}
}

func TestFlexShedIsA503NotCharged(t *testing.T) {
	srv, _ := start(t, geminisim.Options{Tiers: geminisim.Tiers{FlexShedRate: 1}})
	c := gemqClient(t, srv)
	_, err := c.Generate(t.Context(), "t", model, tierRequest(t, "flex"))
	f := gemini.Classify(err)
	if f.Code != http.StatusServiceUnavailable || f.Status != "UNAVAILABLE" || f.Kind != gemini.Transient {
		t.Fatalf("flex at shed rate 1: %+v, want 503 UNAVAILABLE", f)
	}
	if _, err := c.Generate(t.Context(), "t2", model, tierRequest(t, "standard")); err != nil {
		t.Fatalf("standard is never shed: %v", err)
	}
	st := srv.Stats(1)
	if st.ByOutcome["shed"] != 1 || st.Models[model].Charged != 1 {
		t.Errorf("outcomes %v, charged %d; want one shed, only the standard call charged", st.ByOutcome, st.Models[model].Charged)
	}
}

func TestUnknownTierRefusedLikeTheAPI(t *testing.T) {
	_, gc := start(t, geminisim.Options{})
	_, err := gc.Models.GenerateContent(t.Context(), model, genai.Text("x"), &genai.GenerateContentConfig{ServiceTier: "cheapest"})
	if f := gemini.Classify(err); f.Code != 400 || f.Kind != gemini.Permanent {
		t.Fatalf("unknown tier: %v, want 400", err)
	}
}
