package chaos

import (
	"context"
	"slices"
	"testing"
)

// Short lists the scenarios `make test` runs (about three and a half minutes): ones
// that pass on main. The others run in `make chaos` until the task
// lifecycle of issue 10 makes them pass (RELIABILITY.md).
var Short = []string{"worker-kill", "cloudtasks-outage", "redis-pause", "redis-restart-rdb"}

// TestShort runs the short form of the suite against the real parts and
// fails on any missed target.
func TestShort(t *testing.T) {
	var short []Scenario
	for _, sc := range Catalogue() {
		if slices.Contains(Short, sc.Name) {
			short = append(short, sc)
		}
	}
	if len(short) != len(Short) {
		t.Fatalf("Short names %d scenarios, Catalogue has %d of them", len(Short), len(short))
	}
	var reports []Report
	for _, sc := range short {
		t.Run(sc.Name, func(t *testing.T) {
			r := Run(context.Background(), DefaultConfig, sc, "")
			reports = append(reports, r)
			for _, f := range r.Failures() {
				t.Errorf("%s: %s (log %s)", sc.Name, f, r.Log)
			}
		})
	}
	t.Log("\n" + Table(reports))
}
