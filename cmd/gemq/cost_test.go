package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/gemq-dev/gemq/internal/tier"
)

func TestStatusAndSummaryShowCost(t *testing.T) {
	p := tier.Price{Input: 0.30, Cached: 0.03, Output: 2.50}
	st := jobStatus{JobID: "j", State: "done",
		ServiceTier: &jobTier{Tier: "standard", Asked: "auto", Reason: "standard: the deadline is near", Downgraded: 2},
		Cost:        tier.NewReport(map[string]tier.Usage{"standard": {Tasks: 3, InputTokens: 1_000_000, OutputTokens: 100_000}}, &p)}
	var b bytes.Buffer
	printStatus(&b, st)
	for _, want := range []string{"tier      standard (asked auto: standard: the deadline is near)", "2 task(s) served at another tier",
		"tokens    standard: 3 task(s), 1000000 input (0 cached), 100000 output, 0 thinking", "cost      ~$0.5500"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	printCostSummary(&b, st)
	for _, want := range []string{"service tier          standard (chosen by auto); 2 task(s) served at another tier",
		"$0.5500 as run; standard $0.5500; flex $0.2750; batch $0.2750; priority $1.1000",
		"flex or batch would have saved $0.2750 (50%)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, b.String())
		}
	}
}

func TestDeadlineFlag(t *testing.T) {
	now := time.Date(2026, 12, 2, 20, 0, 0, 0, time.UTC)
	tr, d := "auto", "6h"
	got, dl, err := tierFlags{tier: &tr, deadline: &d}.params(now)
	if err != nil || got != "auto" || dl != "2026-12-03T02:00:00Z" {
		t.Errorf("params = %q %q %v", got, dl, err)
	}
	d = "2026-12-03T06:00:00Z"
	if _, dl, _ = (tierFlags{tier: &tr, deadline: &d}).params(now); dl != d {
		t.Errorf("an RFC 3339 deadline is passed on as it is, got %q", dl)
	}
	d = "-1h"
	if _, _, err := (tierFlags{tier: &tr, deadline: &d}).params(now); err == nil {
		t.Error("a deadline in the past was accepted")
	}
}
