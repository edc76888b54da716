package chaos

import (
	"net/http"
	"os"
	"testing"
	"time"
)

// TestDuplicates checks the duplicate-call count on a hand-made stand-in
// log: a retry after a failure is not a duplicate, a call after a 200 or
// during another call of the same task is, and one of a task whose call was
// in flight at a worker's death counts as such.
func TestDuplicates(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	call := func(id string, from, to int, status int) geminiEntry {
		return geminiEntry{Method: "generateContent", TaskID: id, Status: status,
			Received: t0.Add(time.Duration(from) * time.Second), Finished: t0.Add(time.Duration(to) * time.Second)}
	}
	log := []geminiEntry{
		call("retried", 0, 1, http.StatusServiceUnavailable), call("retried", 2, 3, http.StatusOK),
		call("after-ok", 0, 1, http.StatusOK), call("after-ok", 5, 6, http.StatusOK),
		call("overlap", 0, 4, 0), call("overlap", 2, 3, http.StatusOK),
		call("killed", 0, 9, 0), call("killed", 3, 4, http.StatusOK),
		call("once", 0, 1, http.StatusOK),
		call("timed-out", 0, 2, 0), call("timed-out", 4, 5, http.StatusOK),
		call("killed-gone", 0, 1, 0), call("killed-gone", 30, 31, http.StatusOK),
	}
	dups, inFlight := duplicates(log, map[string]bool{"killed": true, "killed-gone": true})
	if dups != 4 || inFlight != 2 {
		t.Errorf("duplicates = %d, in flight at a kill %d; want 4 and 2", dups, inFlight)
	}
}

func TestFailures(t *testing.T) {
	ok := Report{StatusOK: true, Delay: time.Second, Allowed: 2 * time.Second, DupCalls: 2, DupInFlight: 2}
	if !ok.Pass() {
		t.Errorf("%+v fails: %v", ok, ok.Failures())
	}
	for name, r := range map[string]Report{
		"lost":        {StatusOK: true, Lost: 1},
		"two results": {StatusOK: true, TwoResults: 1},
		"dup calls":   {StatusOK: true, DupCalls: 2, DupInFlight: 1},
		"window":      {StatusOK: true, WindowsOver: 1},
		"late":        {StatusOK: true, Delay: 3 * time.Second, Allowed: 2 * time.Second},
		"status":      {},
	} {
		if r.Pass() {
			t.Errorf("%s: %+v passes", name, r)
		}
	}
}

// Only claims that missed a slot lying between a kill and the restart
// after it count as slots lost at the kill.
func TestLostAtKill(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 2, 35, 30, 0, time.UTC)
	path := t.TempDir() + "/chaos.log"
	line := func(slot time.Time) string {
		return `{"message":"claim missed its slot; reserved again","slot":"` + slot.Format(time.RFC3339Nano) + `"}` + "\n"
	}
	log := line(t0.Add(100*time.Millisecond)) + line(t0.Add(900*time.Millisecond)) + // during the first outage
		line(t0.Add(-time.Second)) + // before it
		line(t0.Add(5*time.Second)) + // after the restart
		`{"message":"task deferred","slot":"` + t0.Add(200*time.Millisecond).Format(time.RFC3339Nano) + `"}` + "\n" +
		"chaos: worker killed at +7.076s\n"
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	events := []Event{{What: "worker killed", At: t0}, {What: "worker restarted", At: t0.Add(time.Second)},
		{What: "redis paused", At: t0.Add(4 * time.Second)}, {What: "redis resumed", At: t0.Add(6 * time.Second)}}
	if n := lostAtKill(path, events); n != 2 {
		t.Errorf("lostAtKill = %d, want 2", n)
	}
	if n := lostAtKill(path, events[2:]); n != 0 {
		t.Errorf("lostAtKill without a kill = %d, want 0", n)
	}
}
