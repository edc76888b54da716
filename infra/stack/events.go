package stack

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// JobEvents is what the functions' log has said so far about one job's
// trouble and timing: the figures a progress line shows as they happen
// (the job status API only counts tasks per state).
type JobEvents struct {
	// Transient counts Gemini calls that failed and will be retried
	// (5xx, timeouts, connection errors); Throttled the 429s Gemini
	// answered (quota or capacity); Failed the tasks that ended in an
	// error, DeadLettered of them those whose retries ran out.
	Transient, Throttled, Failed, DeadLettered int
	// Last is the most recent of those failures' reasons ("" when there
	// was none); LastAt is when it was logged.
	Last   string
	LastAt time.Time
	// LastSlot is the latest time a deferred task of the job is due: its
	// reserved slot, or the end of its back-off. Zero when none was
	// deferred.
	LastSlot time.Time
}

// events follows the stack's log file and keeps JobEvents per job.
type events struct {
	mu   sync.Mutex
	jobs map[string]*JobEvents
	stop context.CancelFunc
	done chan struct{}
}

// followLog reads path from its start, then what is appended to it, until
// stopped.
func followLog(path string) (*events, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("stack: follow log: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ev := &events{jobs: map[string]*JobEvents{}, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(ev.done)
		defer f.Close()
		r := bufio.NewReaderSize(f, 64<<10)
		var partial []byte
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			for {
				line, err := r.ReadBytes('\n')
				if err != nil { // io.EOF: keep the incomplete line for later
					partial = append(partial, line...)
					break
				}
				if len(partial) > 0 {
					line = append(partial, line...)
					partial = nil
				}
				ev.observe(line)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return ev, nil
}

// close stops following and waits for the reader (it reads what is there
// first, so nothing logged before Close is missed).
func (ev *events) close() {
	if ev == nil {
		return
	}
	ev.stop()
	<-ev.done
}

// job returns a copy of a job's events.
func (ev *events) job(id string) JobEvents {
	if ev == nil {
		return JobEvents{}
	}
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if j := ev.jobs[id]; j != nil {
		return *j
	}
	return JobEvents{}
}

// observe takes in one JSON log line of the functions (Cloud Logging field
// names: "message", "severity", "time"; slog's "msg" and "time" too).
func (ev *events) observe(line []byte) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return
	}
	var l struct {
		Message  string `json:"message"`
		Msg      string `json:"msg"`
		Time     time.Time
		JobID    string `json:"job_id"`
		Failure  string `json:"failure"`
		HTTPCode int    `json:"http_code"`
		QuotaID  string `json:"quota_id"`
		Reason   string `json:"reason"`
		At       string `json:"at"`
		Outcome  string `json:"outcome"`
		Code     int    `json:"code"`
		Status   string `json:"status"`
	}
	if json.Unmarshal(line, &l) != nil || l.JobID == "" {
		return
	}
	msg := l.Message
	if msg == "" {
		msg = l.Msg
	}
	ev.mu.Lock()
	defer ev.mu.Unlock()
	j := ev.jobs[l.JobID]
	if j == nil {
		j = &JobEvents{}
		ev.jobs[l.JobID] = j
	}
	last := func(s string) {
		j.Last, j.LastAt = s, l.Time
	}
	switch msg {
	case "gemini call failed":
		switch {
		case l.Failure == "transient":
			j.Transient++
			last(fmt.Sprintf("transient: HTTP %d", l.HTTPCode))
		case l.Failure == "capacity" || strings.HasPrefix(l.Failure, "quota"):
			j.Throttled++
			if l.QuotaID != "" {
				last("429 " + l.QuotaID)
			} else {
				last("429 " + l.Failure)
			}
		default:
			last(fmt.Sprintf("%s: HTTP %d", l.Failure, l.HTTPCode))
		}
	case "task deferred":
		if at, err := time.Parse(time.RFC3339Nano, l.At); err == nil && at.After(j.LastSlot) {
			j.LastSlot = at
		}
		if strings.HasPrefix(l.Reason, "transient: ") {
			last(l.Reason) // says more than the HTTP code before it
		}
	case "task failed":
		j.Failed++
		if l.Outcome == "dead_letter" {
			j.DeadLettered++
			last(fmt.Sprintf("dead-lettered after its retries: %s (HTTP %d)", l.Status, l.Code))
		} else {
			last(fmt.Sprintf("failed: %s (HTTP %d)", l.Status, l.Code))
		}
	}
}
