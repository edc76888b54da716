package bench

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestUpdateMarkdownKeepsOthersAndReplacesBlocks(t *testing.T) {
	m := Machine{NProc: 2, CPU: "cpu", GoVersion: "go", OS: "os"}
	at := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	sec := func(v string) Section {
		return Section{ID: "x", Title: "X job", Command: "make bench", Rows: []Row{Info("m", v)}}
	}
	limiter := "# Benchmarks\n\n## Limiter\n\nlimiter text | kept\n\n"
	doc := UpdateMarkdown(limiter, m, at, []Section{sec("old")})
	if !strings.HasPrefix(doc, limiter) || !strings.Contains(doc, "| m | old |") {
		t.Fatalf("first write:\n%s", doc)
	}
	doc = UpdateMarkdown(doc, m, at, []Section{sec("new")})
	if !strings.HasPrefix(doc, limiter) || strings.Contains(doc, "old") || strings.Count(doc, "| m | new |") != 1 {
		t.Fatalf("replace:\n%s", doc)
	}
	// A lost begin marker: the block is found by its heading, not appended.
	lost := strings.Replace(doc, beginMarker("x")+"\n", "", 1)
	doc = UpdateMarkdown(lost, m, at, []Section{sec("newer")})
	if !strings.HasPrefix(doc, limiter) || strings.Contains(doc, "| m | new |") || strings.Count(doc, "## X job") != 1 ||
		strings.Count(doc, beginMarker("x")) != 1 {
		t.Fatalf("lost begin marker:\n%s", doc)
	}
}

func TestReservedSlotsReadsTheWorkersLog(t *testing.T) {
	path := t.TempDir() + "/f.log"
	lines := `{"time":"2026-11-27T05:00:00Z","severity":"INFO","message":"task deferred","task_id":"a","job_id":"j","reason":"reserved: rpm","at":"2026-11-27T05:00:01.5Z","reserved":true}
{"time":"2026-11-27T05:00:00Z","severity":"INFO","message":"task deferred","task_id":"b","job_id":"j","reason":"reserved: rpm","at":"2026-11-27T05:00:02Z","reserved":true}
{"time":"2026-11-27T05:00:00Z","severity":"INFO","message":"task deferred","task_id":"b","job_id":"j","reason":"transient: x","at":"2026-11-27T05:00:09Z","reserved":false}
{"time":"2026-11-27T05:00:00Z","severity":"INFO","message":"task deferred","task_id":"w","job_id":"warmup-j","reason":"reserved: rpm","at":"2026-11-27T05:00:02Z","reserved":true}
{"time":"2026-11-27T05:00:00Z","severity":"INFO","message":"claimed the reserved slot after waiting for it","task_id":"a","job_id":"j","waited":"300ms"}
{"time":"2026-11-27T05:00:00Z","severity":"INFO","message":"claimed the reserved slot after waiting for it","task_id":"w","job_id":"warmup-j","waited":"900ms"}
{"time":"2026-11-27T05:00:00Z","severity":"INFO","message":"other","task_id":"c"}
`
	if err := os.WriteFile(path, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	slots, waited, err := reservedSlots(path, "j")
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2026, 11, 27, 5, 0, 1, 500_000_000, time.UTC)
	if len(slots) != 1 || !slots["a"].Equal(want) || waited != 300*time.Millisecond {
		t.Fatalf("slots = %v, waited %v; want only a at %v and 300ms (the warm-up job's not counted)", slots, waited, want)
	}
}
