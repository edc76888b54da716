package limiter

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseConfigErrorsNameTheField(t *testing.T) {
	dims := func(d string) string {
		return `{"scopes": [{"project": "*", "model": "m", "dimensions": [{"name": "rpm", "unit": "requests", "limit": 10, "period": "1m"}, ` + d + `]}]}`
	}
	for _, tc := range []struct {
		json, field, msg string
	}{
		{`[]`, "", "array is not a valid object"},
		{`null`, "", "must be an object"},
		{`{"scopes": []}`, "scopes", "at least one scope"},
		{`{}`, "scopes", "required"},
		{`{"scopes": [], "extra": 1}`, "extra", "unknown field"},
		{`{"safety": 1.5, "scopes": []}`, "safety", "(0, 1]"},
		{`{"safety": "x", "scopes": []}`, "safety", "not a valid number"},
		{`{"horizon": "2d", "scopes": []}`, "horizon", "not a duration"},
		{`{"horizon": "48h", "scopes": []}`, "horizon", "between 0 and 24h"},
		{`{"guard": "1.5ms", "scopes": []}`, "guard", "whole number of milliseconds"},
		{`{"scopes": [{"project": "*", "model": "m", "dimensions": []}]}`, "scopes[0].dimensions", "at least one dimension"},
		{`{"scopes": [{"project": "*", "model": "m", "dimensions": [{"name": "a", "unit": "requests"}]}]}`, "scopes[0].dimensions[0].limit", "required"},
		{`{"scopes": [{"project": "p", "dimensions": []}]}`, "scopes[0].model", "required"},
		{dims(`{"name": "tpm", "unit": "tokens", "limit": 1, "period": "1m"}`), "scopes[0].dimensions[1].unit", `"tokens" is not one of`},
		{dims(`{"name": "tpm", "unit": "input_tokens", "limit": 1, "period": "soon"}`), "scopes[0].dimensions[1].period", "not a duration"},
		{dims(`{"name": "tpm", "unit": "input_tokens", "limit": 1, "period": "1ms"}`), "scopes[0].dimensions[1].period", "between 10ms"},
		{dims(`{"name": "tpm", "unit": "input_tokens", "limit": 0, "period": "1m"}`), "scopes[0].dimensions[1].limit", "between 1"},
		{dims(`{"name": "tpm", "unit": "input_tokens", "limit": 1.5, "period": "1m"}`), "scopes[0].dimensions[1].limit", "not a valid integer"},
		{dims(`{"name": "rpd", "unit": "requests", "limit": 1, "per": "pacific_day"}`), "scopes[0].dimensions[1].limit", "rounds down to 0"},
		{dims(`{"name": "rpd", "unit": "requests", "limit": 10, "per": "utc_day"}`), "scopes[0].dimensions[1].per", "is not \"pacific_day\""},
		{dims(`{"name": "rpd", "unit": "requests", "limit": 10, "per": "pacific_day", "period": "1m"}`), "scopes[0].dimensions[1].per", "mutually exclusive"},
		{dims(`{"name": "rpd", "unit": "requests", "limit": 10}`), "scopes[0].dimensions[1]", "one of period or per"},
		{dims(`{"name": "rpm", "unit": "requests", "limit": 10, "period": "1m"}`), "scopes[0].dimensions[1].name", "duplicate dimension"},
		{dims(`{"name": "r p m", "unit": "requests", "limit": 10, "period": "1m"}`), "scopes[0].dimensions[1].name", "[A-Za-z0-9_-]"},
		{dims(`{"name": "x", "name": "y", "unit": "requests", "limit": 10, "period": "1m"}`), "scopes[0].dimensions[1].name", "duplicate field"},
		{`{"scopes": [{"project": "*", "model": "m", "dimensions": [{"name": "a", "unit": "requests", "limit": 9, "period": "1m"}]}, {"project": "*", "model": "m", "dimensions": [{"name": "a", "unit": "requests", "limit": 9, "period": "1m"}]}]}`, "scopes[1]", "duplicate scope"},
		{`{"scopes": [{"project": "a b", "model": "m", "dimensions": []}]}`, "scopes[0].project", "printable"},
		{`{"scopes": []} trailing`, "", "unexpected data"},
	} {
		_, err := ParseConfig([]byte(tc.json))
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("%s: error %v is not a *ConfigError", tc.json, err)
			continue
		}
		if ce.Field != tc.field || !strings.Contains(ce.Msg, tc.msg) {
			t.Errorf("%s:\n got %q (field %q)\nwant field %q containing %q", tc.json, err, ce.Field, tc.field, tc.msg)
		}
	}
}

func TestParseConfigDefaultsAndOverrides(t *testing.T) {
	cfg, err := ParseConfig([]byte(`{"scopes": [
	  {"project": "*", "model": "m", "dimensions": [{"name": "rpm", "unit": "requests", "limit": 100, "period": "1m"}]},
	  {"project": "p", "model": "m", "safety": 0.5, "horizon": "1m", "guard": "0s", "dimensions": [{"name": "rpd", "unit": "requests", "limit": 100, "per": "pacific_day"}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	q, ok := cfg.Quota(Scope{"any", "m"})
	want := Quota{Project: "*", Model: "m", Safety: 0.95, Horizon: 15 * time.Minute, Guard: time.Second,
		Dimensions: []Dimension{{Name: "rpm", Unit: Requests, Limit: 100, Period: time.Minute}}}
	if d := cmp.Diff(want, q); !ok || d != "" {
		t.Fatalf("wildcard quota (-want +got):\n%s", d)
	}
	if q.Capacity(q.Dimensions[0]) != 95 {
		t.Fatalf("capacity %d", q.Capacity(q.Dimensions[0]))
	}
	q, _ = cfg.Quota(Scope{"p", "m"})
	if q.Project != "p" || q.Safety != 0.5 || q.Guard != 0 || !q.Dimensions[0].Daily() || q.Capacity(q.Dimensions[0]) != 50 {
		t.Fatalf("exact-project quota: %+v", q)
	}
	if _, ok := cfg.Quota(Scope{"p", "other"}); ok {
		t.Fatal("quota for an unconfigured model")
	}
	if d := cmp.Diff([]string{"m"}, cfg.Models()); d != "" {
		t.Fatal(d)
	}
}

func TestLoadConfig(t *testing.T) {
	data, err := os.ReadFile("testdata/tier1.json")
	if err != nil {
		t.Fatal(err)
	}
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	if _, err := LoadConfig(env(map[string]string{"GEMQ_QUOTAS": string(data)})); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(env(map[string]string{"GEMQ_QUOTAS_FILE": "testdata/tier1.json"})); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"scopes": [{"model": 1}]}`), 0o600)
	for _, tc := range []struct {
		env   map[string]string
		field string
	}{
		{map[string]string{}, "GEMQ_QUOTAS"},
		{map[string]string{"GEMQ_QUOTAS": "{}", "GEMQ_QUOTAS_FILE": "x"}, "GEMQ_QUOTAS"},
		{map[string]string{"GEMQ_QUOTAS_FILE": "/nonexistent"}, "GEMQ_QUOTAS_FILE"},
		{map[string]string{"GEMQ_QUOTAS_FILE": bad}, "scopes[0].model"},
	} {
		_, err := LoadConfig(env(tc.env))
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("%v: got %v, want a ConfigError for %s", tc.env, err, tc.field)
		}
	}
}

func TestTestdataTiersParse(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.json")
	if len(files) < 3 {
		t.Fatalf("testdata: %v", files)
	}
	for _, f := range files {
		if _, err := LoadConfig(func(k string) string {
			if k == "GEMQ_QUOTAS_FILE" {
				return f
			}
			return ""
		}); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestCheckWindows(t *testing.T) {
	q := Quota{Safety: 1, Dimensions: []Dimension{
		{Name: "rpm", Unit: Requests, Limit: 2, Period: time.Second},
		{Name: "rpd", Unit: Requests, Limit: 4, Per: PacificDay},
	}}
	t0 := pacificTime(2026, 3, 8, 23, 59, 58)
	ev := func(ms int) Event {
		return Event{At: t0.Add(time.Duration(ms) * time.Millisecond), Cost: Cost{Requests: 1}}
	}
	if v := CheckWindows([]Event{ev(0), ev(999), ev(1000), ev(2500)}, q); len(v) != 0 {
		t.Fatalf("no violation expected: %v", v)
	}
	v := CheckWindows([]Event{ev(0), ev(999), ev(999), ev(3000)}, q)
	if len(v) != 1 || v[0].Dimension != "rpm" || v[0].Used != 3 {
		t.Fatalf("one rpm violation expected: %v", v)
	}
	// 5 in one Pacific day (the 23h spring-forward day ends at 00:00 Mar 9).
	v = CheckWindows([]Event{ev(-5000), ev(-4000), ev(-3000), ev(-1000), ev(0), ev(3000)}, q)
	if len(v) != 1 || v[0].Dimension != "rpd" || v[0].Used != 5 {
		t.Fatalf("one rpd violation expected: %v", v)
	}
	if g := WithGuard(Quota{Guard: time.Second, Dimensions: q.Dimensions}); g.Dimensions[0].Period != 2*time.Second || q.Dimensions[0].Period != time.Second {
		t.Fatal("WithGuard")
	}
}

// Example shows a typical Gemini paid tier 1 configuration (as published at
// the time of writing; take your project's numbers from AI Studio) and the
// capacity the limiter keeps under each limit.
func Example() {
	cfg, err := LoadConfig(func(k string) string {
		if k == "GEMQ_QUOTAS_FILE" {
			return "testdata/tier1.json"
		}
		return ""
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	q, _ := cfg.Quota(Scope{Project: "some-project", Model: "gemini-2.5-flash"})
	for _, d := range q.Dimensions {
		per := d.Period.String()
		if d.Daily() {
			per = d.Per
		}
		fmt.Printf("%s: %d %s per %s (limit %d)\n", d.Name, q.Capacity(d), d.Unit, per, d.Limit)
	}
	fmt.Println(cfg.Models())
	// Output:
	// rpm: 950 requests per 1m0s (limit 1000)
	// tpm: 950000 input_tokens per 1m0s (limit 1000000)
	// rpd: 9500 requests per pacific_day (limit 10000)
	// [gemini-2.5-flash gemini-2.5-pro]
}
