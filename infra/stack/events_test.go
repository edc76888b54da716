package stack

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestFollowLog feeds log lines as the functions write them (Cloud
// Logging field names), in two appends with a line split across them, and
// checks the counts, the last reason and the last slot per job.
func TestFollowLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gemq.log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ev, err := followLog(path)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"time":"2026-12-02T10:00:00Z","severity":"INFO","message":"task deferred","job_id":"j","reason":"quota","at":"2026-12-02T10:05:00Z","reserved":true}
{"time":"2026-12-02T10:00:01Z","severity":"INFO","message":"task deferred","job_id":"j","reason":"quota","at":"2026-12-02T10:04:00Z","reserved":true}
{"time":"2026-12-02T10:00:02Z","severity":"WARNING","message":"gemini call failed","job_id":"j","failure":"quota_per_minute","http_code":429,"quota_id":"GenerateRequestsPerMinutePerProjectPerModel"}
{"time":"2026-12-02T10:00:03Z","severity":"WARNING","message":"gemini call failed","job_id":"j","failure":"transient","http_code":0}
{"time":"2026-12-02T10:00:03Z","severity":"INFO","message":"task deferred","job_id":"j","reason":"transient: error sending request","at":"2026-12-02T10:00:13Z"}
{"time":"2026-12-02T10:00:04Z","severity":"WARNING","message":"task failed","job_id":"other","outcome":"failed","code":400,"status":"INVALID_ARGUMENT"}
{"time":"2026-12-02T10:00:05Z","severity":"WARNING","message":"task failed","job_id":"j","outcome":"dead_letter","code":503,"sta`)
	f.WriteString(`tus":"UNAVAILABLE"}
not json
{"severity":"INFO","message":"request","status":200}
`)
	deadline := time.Now().Add(10 * time.Second)
	for ev.job("j").Failed == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	ev.close()
	want := JobEvents{
		Transient: 1, Throttled: 1, Failed: 1, DeadLettered: 1,
		Last:     "dead-lettered after its retries: UNAVAILABLE (HTTP 503)",
		LastAt:   time.Date(2026, 12, 2, 10, 0, 5, 0, time.UTC),
		LastSlot: time.Date(2026, 12, 2, 10, 5, 0, 0, time.UTC),
	}
	if diff := cmp.Diff(want, ev.job("j")); diff != "" {
		t.Errorf("job j (-want +got):\n%s", diff)
	}
	if got := ev.job("other"); got.Failed != 1 || got.Last != "failed: INVALID_ARGUMENT (HTTP 400)" {
		t.Errorf("job other: %+v", got)
	}
	if got := ev.job("none"); got != (JobEvents{}) {
		t.Errorf("unknown job: %+v", got)
	}
}
