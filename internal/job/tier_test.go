package job

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gemq-dev/gemq/internal/task"
	"github.com/gemq-dev/gemq/internal/tier"
)

var tierNow = time.Date(2026, 12, 2, 20, 0, 0, 0, time.UTC)

func tierRules() Rules {
	r := rules()
	r.Now = func() time.Time { return tierNow }
	r.PerMinute = func(string) int64 { return 10 }
	return r
}

func tierBody(extra string) string {
	return `{"model":"` + testModel + `"` + extra + `,"requests":[{"key":"a","request":{"contents":[{"parts":[{"text":"hi"}]}]}},{"key":"b","request":{"contents":[{"parts":[{"text":"ho"}]}]}}]}`
}

func TestBuildRefusesBadTiers(t *testing.T) {
	for _, tc := range []struct {
		name, extra, field, want string
	}{
		{"unknown tier", `,"service_tier":"cheap"`, "service_tier", "must be standard, flex, priority, batch or auto"},
		{"auto without deadline", `,"service_tier":"auto"`, "deadline", "auto needs a deadline"},
		{"deadline not RFC 3339", `,"service_tier":"flex","deadline":"tomorrow"`, "deadline", "RFC 3339"},
		{"deadline passed", `,"service_tier":"auto","deadline":"2026-12-02T19:00:00Z"`, "deadline", "has passed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tierRules().Build(t.Context(), JSON, []byte(tierBody(tc.extra)), Params{})
			var je *Error
			if !errors.As(err, &je) || je.Kind != Invalid || je.Field != tc.field || !strings.Contains(je.Message, tc.want) {
				t.Fatalf("Build = %v, want an Invalid error on %s saying %q", err, tc.field, tc.want)
			}
		})
	}
}

// tiersOf decodes every task of j and returns their service tiers.
func tiersOf(t *testing.T, j *Job) []string {
	t.Helper()
	var out []string
	for _, tk := range j.Tasks {
		e, err := task.Decode(tk.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e.ServiceTier+"|"+e.Deadline)
	}
	return out
}

func TestBuildCarriesTierOnEveryTask(t *testing.T) {
	j, err := tierRules().Build(t.Context(), JSON, []byte(tierBody(`,"service_tier":"flex","deadline":"2026-12-03T06:00:00Z"`)), Params{})
	if err != nil {
		t.Fatal(err)
	}
	if got := tiersOf(t, j); got[0] != "flex|2026-12-03T06:00:00Z" || got[1] != got[0] {
		t.Errorf("task tiers = %v, want flex with the deadline on both", got)
	}
	if j.Tiers.Chosen != tier.Flex || j.Tiers.Reason != "" {
		t.Errorf("Tiers = %+v", j.Tiers)
	}
	// JSONL: the tier comes from the parameters.
	jl, err := tierRules().Build(t.Context(), JSONL, []byte(`{"key":"a","request":{"contents":[{"parts":[{"text":"hi"}]}]}}`+"\n"),
		Params{Model: testModel, ServiceTier: "priority"})
	if err != nil {
		t.Fatal(err)
	}
	if got := tiersOf(t, jl); got[0] != "priority|" {
		t.Errorf("JSONL task tier = %v, want priority", got)
	}
}

func TestBuildResolvesAuto(t *testing.T) {
	// Two tasks at 10/min need 12 s of quota: flex needs 15m12s.
	for _, tc := range []struct {
		deadline string
		want     tier.Tier
	}{
		{"2026-12-02T20:16:00Z", tier.Flex},
		{"2026-12-02T20:14:00Z", tier.Standard},
	} {
		j, err := tierRules().Build(t.Context(), JSON, []byte(tierBody(`,"service_tier":"auto","deadline":"`+tc.deadline+`"`)), Params{})
		if err != nil {
			t.Fatal(err)
		}
		if j.Tiers.Asked != tier.Auto || j.Tiers.Chosen != tc.want || !strings.HasPrefix(j.Tiers.Reason, string(tc.want)) {
			t.Errorf("deadline %s: Tiers = %+v, want auto resolved to %s with its reason", tc.deadline, j.Tiers, tc.want)
		}
		if got := tiersOf(t, j); got[0] != string(tc.want)+"|"+tc.deadline {
			t.Errorf("deadline %s: task tiers = %v, want %s", tc.deadline, got, tc.want)
		}
	}
	// The hash covers what was asked, not what auto picked: a retry that
	// picks differently is the same job.
	a, _ := tierRules().Build(t.Context(), JSON, []byte(tierBody(`,"job_id":"j","service_tier":"auto","deadline":"2026-12-02T20:16:00Z"`)), Params{})
	late := tierRules()
	late.Now = func() time.Time { return tierNow.Add(5 * time.Minute) }
	b, _ := late.Build(t.Context(), JSON, []byte(tierBody(`,"job_id":"j","service_tier":"auto","deadline":"2026-12-02T20:16:00Z"`)), Params{})
	if a == nil || b == nil || a.Hash != b.Hash || a.Tiers.Chosen == b.Tiers.Chosen {
		t.Errorf("auto retry: hashes %v, chosen %v / %v; want equal hashes, different choices", a != nil && b != nil && a.Hash == b.Hash, a.Tiers.Chosen, b.Tiers.Chosen)
	}
}
