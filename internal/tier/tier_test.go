package tier

import (
	"strings"
	"testing"
	"time"
)

func TestForTask(t *testing.T) {
	now := time.Date(2026, 12, 2, 20, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		t        Tier
		deadline time.Time
		want     Tier
	}{
		{"", time.Time{}, Standard},
		{Priority, time.Time{}, Priority},
		{Auto, now.Add(FlexLatency), Flex},
		{Auto, now.Add(BatchTarget - time.Second), Flex},
		{Auto, now.Add(BatchTarget), Batch},
		{Batch, time.Time{}, Batch},
		{Auto, now.Add(FlexLatency - time.Second), Standard},
		{Auto, time.Time{}, Standard},
	} {
		if got := ForTask(tc.t, now, tc.deadline); got != tc.want {
			t.Errorf("ForTask(%q, deadline %v) = %q, want %q", tc.t, tc.deadline.Sub(now), got, tc.want)
		}
	}
}

func TestChooseSaysWhenStandardMissesToo(t *testing.T) {
	now := time.Date(2026, 12, 2, 20, 0, 0, 0, time.UTC)
	c := Choose(now, now.Add(time.Minute), 100, 10) // 10 minutes of quota
	if c.Tier != Standard || !strings.Contains(c.Reason, "even standard is expected to miss it") {
		t.Errorf("Choose = %+v", c)
	}
}

func TestChoosePicksBatchForADayOrMore(t *testing.T) {
	now := time.Date(2026, 12, 2, 20, 0, 0, 0, time.UTC)
	if c := Choose(now, now.Add(BatchTarget), 100, 10); c.Tier != Batch || !strings.Contains(c.Reason, "turnaround target") {
		t.Errorf("Choose(24h) = %+v, want batch", c)
	}
	if c := Choose(now, now.Add(BatchTarget-time.Minute), 100, 10); c.Tier != Flex {
		t.Errorf("Choose(24h-1m) = %+v, want flex", c)
	}
	if _, err := Parse("batch"); err != nil {
		t.Errorf("Parse(batch) = %v", err)
	}
}
