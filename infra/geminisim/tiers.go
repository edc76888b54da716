package geminisim

import (
	"encoding/json"
	"fmt"
	"time"
)

// Tiers configure the service tiers the stand-in serves, as the Gemini API
// does (https://ai.google.dev/gemini-api/docs/optimization, read
// 2026-12-02): a request names its tier in the body's top-level
// "serviceTier" (genai's GenerateContentConfig.ServiceTier); the tier that
// served it comes back in the x-gemini-service-tier header and in
// usageMetadata.serviceTier.
type Tiers struct {
	// FlexShedRate is the probability (0..1) that a flex request is shed:
	// answered 503 UNAVAILABLE "The model is overloaded. Please try again
	// later." without being charged, the shape the Gemini API gives an
	// overloaded (shed) request. A shed is decided before the quota.
	FlexShedRate float64 `json:"flex_shed_rate,omitempty"`
	// PriorityRPM is the dynamic priority limit per model and quota
	// minute: priority requests beyond it in a sliding minute are served
	// at standard instead (a silent downgrade, as the real API does rather
	// than failing). 0: no limit.
	PriorityRPM int64 `json:"priority_rpm,omitempty"`
}

// tierState is the sliding minute of priority requests per model (under
// Server.mu).
type tierState struct {
	priority map[string][]time.Time
}

// splitTier takes the top-level "serviceTier" out of a generateContent body
// (the rest is a GenerateContentRequest as gemq parses it) and checks its
// value: "" (absent), standard, flex or priority, in the lower-case form
// genai sends, or the SERVICE_TIER_* enum names the REST API also accepts.
func splitTier(body []byte) ([]byte, string, error) {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return body, "", nil // not an object: ParseRequest says what is wrong
	}
	raw, ok := m["serviceTier"]
	if !ok {
		return body, "standard", nil
	}
	delete(m, "serviceTier")
	var t string
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, "", fmt.Errorf("Invalid value at 'service_tier' (type.googleapis.com/google.ai.generativelanguage.v1beta.ServiceTier), %s", raw)
	}
	switch t {
	case "", "unspecified", "SERVICE_TIER_UNSPECIFIED", "standard", "SERVICE_TIER_STANDARD":
		t = "standard"
	case "flex", "SERVICE_TIER_FLEX":
		t = "flex"
	case "priority", "SERVICE_TIER_PRIORITY":
		t = "priority"
	default:
		return nil, "", fmt.Errorf("Invalid value at 'service_tier' (type.googleapis.com/google.ai.generativelanguage.v1beta.ServiceTier), %q", t)
	}
	rest, err := json.Marshal(m)
	if err != nil {
		return nil, "", err
	}
	return rest, t, nil
}

// shedLocked decides whether a request asking for tier is shed (under s.mu).
func (s *Server) shedLocked(tier string) bool {
	return tier == "flex" && s.opts.Tiers.FlexShedRate > 0 && s.rng.Float64() < s.opts.Tiers.FlexShedRate
}

// servedLocked is the tier that serves an admitted request asking for tier
// at stand-in time at, recording a priority request in its minute (under
// s.mu).
func (s *Server) servedLocked(model, tier string, at time.Time) string {
	if tier != "priority" {
		if tier == "" {
			return "standard"
		}
		return tier
	}
	lim := s.opts.Tiers.PriorityRPM
	if lim <= 0 {
		return tier
	}
	if s.tiers.priority == nil {
		s.tiers.priority = make(map[string][]time.Time)
	}
	w := s.tiers.priority[model]
	i := 0
	for i < len(w) && !w[i].After(at.Add(-time.Minute)) {
		i++
	}
	w = w[i:]
	if int64(len(w)) >= lim {
		s.tiers.priority[model] = w
		return "standard"
	}
	s.tiers.priority[model] = append(w, at)
	return tier
}

// SetTiers replaces the tier behaviour for the requests that arrive from
// now on (a storm of flex sheds that starts and ends during a run).
func (s *Server) SetTiers(t Tiers) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.Tiers = t
}
