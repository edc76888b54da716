package geminisim

import (
	"net/http"
	"slices"
	"strconv"
	"time"
)

// Entry is the record of one API request (generateContent, countTokens, getModel, batchGenerateContent,
// batches.get|list|cancel|delete, files.upload|get|list|delete|download), or of one entry of a batch that
// ended (Method "batchEntry": TaskID is the entry's key, Received the batch's creation, Finished its end,
// Status 200 for a response or the HTTP equivalent of its error status, Outcome as BatchStats.Entries).
type Entry struct {
	Seq    int64  `json:"seq"`
	Method string `json:"method"`
	Model  string `json:"model"`
	// TaskID is the X-Gemq-Task-Id header, if any.
	TaskID string `json:"task_id,omitempty"`
	// Received and Finished are in stand-in time (see Server.Now).
	Received time.Time `json:"received"`
	Finished time.Time `json:"finished"`
	// InputTokens is what the request was (or would have been) charged; OutputTokens what it generated.
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens,omitempty"`
	// Status is the HTTP status answered; 0 when the client got no answer (hang, reset, client gone).
	Status int `json:"status"`
	// Outcome: ok, quota, quota_zero, capacity, shed (a flex request shed: 503), too_long, error_500, error_503, error_504, hang, reset,
	// client_gone, bad_request, not_found, unregistered, invalid_key.
	Outcome string `json:"outcome"`
	// Dimensions violated, for quota outcomes.
	Dimensions []Dimension `json:"dimensions,omitempty"`
	// Charged is true when the request counted against RPM, TPM and RPD.
	Charged bool `json:"charged"`
	// Tier is the service tier the request asked for ("standard" when it named none, "" when it was
	// not read); ServedTier the one that served it (set when charged).
	Tier       string `json:"tier,omitempty"`
	ServedTier string `json:"served_tier,omitempty"`
}

func (s *Server) record(e Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recordLocked(e)
}

func (s *Server) recordLocked(e Entry) {
	s.seq++
	e.Seq = s.seq
	s.log = append(s.log, e)
}

// Log returns a copy of every recorded request, in completion order, after moving batches on to their
// state at the current stand-in time (a batch that ended adds one "batchEntry" per entry).
func (s *Server) Log() []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advanceLocked(s.clk.Now())
	return slices.Clone(s.log)
}

// counted reports whether an entry is a generateContent that reached the model: authenticated, for a
// served model, well-formed. These are the requests "Gemini receives" for the invariant, whatever their
// answer (a 429 still shows the client sent too much).
func counted(e Entry) bool {
	if e.Method != "generateContent" {
		return false
	}
	switch e.Outcome {
	case "unregistered", "invalid_key", "not_found", "bad_request":
		return false
	}
	return true
}

// Violation is a sliding window (or Pacific day) whose received requests or input tokens exceeded a limit.
type Violation struct {
	Model     string    `json:"model"`
	Dimension Dimension `json:"dimension"`
	// Start is the first request of the window (stand-in time); for RPD, midnight of the Pacific day.
	Start time.Time `json:"start"`
	// Value is the count (requests or tokens) in the window; Limit the limit it was checked against.
	Value int64   `json:"value"`
	Limit float64 `json:"limit"`
}

// Peaks are the largest sliding-window values of one model's received requests: requests and input tokens
// in any one-minute window, requests in any Pacific day.
type Peaks struct {
	RPM int64 `json:"rpm"`
	TPM int64 `json:"tpm"`
	RPD int64 `json:"rpd"`
}

// Check verifies, over the log, that in every one-minute sliding window the requests and input tokens of
// model that reached the stand-in (see Entry; 429s included) stay within safety × lim, and per Pacific day
// within safety × lim.RPD. Zero limits are not checked; safety ≤ 0 means 1. It returns every violation
// (for each dimension, the windows beginning at each offending request), capped at 100.
func (s *Server) Check(model string, lim Limits, safety float64) []Violation {
	v, _ := analyse(s.Log(), model, lim, safety)
	return v
}

func analyse(log []Entry, model string, lim Limits, safety float64) ([]Violation, Peaks) {
	if safety <= 0 {
		safety = 1
	}
	var evs []Entry
	for _, e := range log {
		if e.Model == model && counted(e) {
			evs = append(evs, e)
		}
	}
	slices.SortStableFunc(evs, func(a, b Entry) int { return a.Received.Compare(b.Received) })
	var out []Violation
	var peaks Peaks
	add := func(v Violation) {
		if len(out) < 100 {
			out = append(out, v)
		}
	}
	// Sliding minute: the window starting at request i holds requests j ≥ i received before t_i + 1m.
	j := 0
	var reqs, toks int64
	for i := range evs {
		if j < i {
			j, reqs, toks = i, 0, 0
		}
		for j < len(evs) && evs[j].Received.Before(evs[i].Received.Add(time.Minute)) {
			reqs++
			toks += evs[j].InputTokens
			j++
		}
		peaks.RPM = max(peaks.RPM, reqs)
		peaks.TPM = max(peaks.TPM, toks)
		if l := float64(lim.RPM) * safety; lim.RPM > 0 && float64(reqs) > l {
			add(Violation{Model: model, Dimension: RPM, Start: evs[i].Received, Value: reqs, Limit: l})
		}
		if l := float64(lim.TPM) * safety; lim.TPM > 0 && float64(toks) > l {
			add(Violation{Model: model, Dimension: TPM, Start: evs[i].Received, Value: toks, Limit: l})
		}
		reqs--
		toks -= evs[i].InputTokens
	}
	days := map[string]int64{}
	var order []string
	for _, e := range evs {
		d := pacificDay(e.Received)
		if _, ok := days[d]; !ok {
			order = append(order, d)
		}
		days[d]++
	}
	for _, d := range order {
		peaks.RPD = max(peaks.RPD, days[d])
		if l := float64(lim.RPD) * safety; lim.RPD > 0 && float64(days[d]) > l {
			start, _ := time.ParseInLocation(time.DateOnly, d, pacific)
			add(Violation{Model: model, Dimension: RPD, Start: start, Value: days[d], Limit: l})
		}
	}
	return out, peaks
}

// ModelStats summarise one model's generateContent traffic.
type ModelStats struct {
	Limits Limits `json:"limits"`
	// Requests received (see Check for which count); Charged of them counted against the quota; OK answered 200.
	Requests int `json:"requests"`
	Charged  int `json:"charged"`
	OK       int `json:"ok"`
	// InputTokens and OutputTokens summed over Charged requests.
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
	// Quota429 counts 429s by violated dimension (a 429 may count under several); Capacity429 the 429s
	// without details; QuotaZero429 the answers of a model without quota.
	Quota429     map[Dimension]int `json:"quota_429"`
	Capacity429  int               `json:"capacity_429"`
	QuotaZero429 int               `json:"quota_zero_429"`
	// Peaks are the largest sliding-window values; Utilisation is Peaks divided by Limits (0 when unlimited).
	Peaks       Peaks                 `json:"peaks"`
	Utilisation map[Dimension]float64 `json:"utilisation"`
	// MeanPerMinute is requests and input tokens per minute between the first and last request received.
	MeanPerMinute struct {
		Requests    float64 `json:"requests"`
		InputTokens float64 `json:"input_tokens"`
	} `json:"mean_per_minute"`
	// Violations of the model's own Limits × the safety passed to Stats.
	Violations []Violation `json:"violations"`
}

// Stats summarise the log.
type Stats struct {
	// Now is the stand-in time; Minute the real length of its minute.
	Now    time.Time     `json:"now"`
	Minute time.Duration `json:"minute_ns"`
	// Requests counts generateContent requests that reached a model; ByStatus and ByOutcome break every
	// generateContent down (HTTP status "0" = no answer).
	Requests  int            `json:"requests"`
	ByStatus  map[string]int `json:"by_status"`
	ByOutcome map[string]int `json:"by_outcome"`
	// Quota429 and Capacity429 count all quota and detail-less 429s.
	Quota429    int `json:"quota_429"`
	Capacity429 int `json:"capacity_429"`
	// Served counts the answered (200) generateContent requests by the tier that served them;
	// Downgrades those served at another tier than they asked for (priority over its limit).
	Served     map[string]int `json:"served,omitempty"`
	Downgrades int            `json:"downgrades,omitempty"`
	// Tasks is the number of distinct task ids seen on generateContent; DuplicateCalls the calls beyond the
	// first for each task; DuplicateTasks the number of calls of each task called more than once.
	Tasks          int                    `json:"tasks"`
	DuplicateCalls int                    `json:"duplicate_calls"`
	DuplicateTasks map[string]int         `json:"duplicate_tasks,omitempty"`
	Models         map[string]*ModelStats `json:"models"`
	// AnsweredTasks counts the distinct task ids answered with a result, interactively (a 200
	// generateContent with X-Gemq-Task-Id) or in a batch (an entry answered with a response, by its key);
	// AnsweredTwice lists those answered more than once, with how often.
	AnsweredTasks int            `json:"answered_tasks"`
	AnsweredTwice map[string]int `json:"answered_twice,omitempty"`
	// Batch summarises the Batch API; nil when no batch was ever asked for.
	Batch *BatchStats `json:"batch,omitempty"`
}

// BatchStats summarise the Batch API. Batch entries never count against the interactive RPM, TPM and RPD
// windows (the Batch API has its own limits).
type BatchStats struct {
	// Created counts the batches created; Refused the creates refused, by outcome (enqueued_tokens,
	// concurrent, too_large, bad_request, not_found, file_not_found, unregistered, invalid_key).
	Created int            `json:"created"`
	Refused map[string]int `json:"refused,omitempty"`
	// States counts the batches by state now (BATCH_STATE_*), deleted ones included.
	States map[string]int `json:"states"`
	// Entries counts the entries of all batches by outcome: ok (answered with a response), error (an error
	// status by Batch.FailureRate), bad_request and too_long (invalid requests, code 3), expired, cancelled
	// (the batch was cancelled or deleted before it ended), failed (the batch failed as a whole) and pending
	// (the batch has not ended).
	Entries map[string]int `json:"entries"`
	// InputTokens and OutputTokens are summed over the entries answered ok; Enqueued is the input tokens of
	// the pending and running batches, by model (what Batch.EnqueuedTokens limits).
	InputTokens  int64            `json:"input_tokens"`
	OutputTokens int64            `json:"output_tokens"`
	Enqueued     map[string]int64 `json:"enqueued,omitempty"`
}

// batchStats summarises the batches and the batch creates of log; nil if there were none.
func (s *Server) batchStats(log []Entry) *BatchStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	bs := &BatchStats{Refused: map[string]int{}, States: map[string]int{}, Entries: map[string]int{}, Enqueued: map[string]int64{}}
	seen := len(s.batch.order) > 0
	for _, e := range log {
		if e.Method == "batchGenerateContent" {
			seen = true
			if e.Outcome != "ok" {
				bs.Refused[e.Outcome]++
			}
		}
	}
	if !seen {
		return nil
	}
	for _, j := range s.batch.order {
		bs.Created++
		bs.States[j.state]++
		if !j.terminal() {
			bs.Entries["pending"] += len(j.entries)
			bs.Enqueued[j.model] += j.tokens
			continue
		}
		for _, e := range j.entries {
			bs.Entries[e.outcome]++
			if e.outcome == "ok" {
				bs.InputTokens += e.tokens
				bs.OutputTokens += e.outTokens
			}
		}
	}
	return bs
}

// Stats summarises the log, checking each model against its configured limits × safety (≤ 0 means 1).
func (s *Server) Stats(safety float64) Stats {
	log := s.Log()
	st := Stats{
		Now: s.clk.Now(), Minute: s.clk.real(time.Minute),
		ByStatus: map[string]int{}, ByOutcome: map[string]int{}, Models: map[string]*ModelStats{},
	}
	calls := map[string]int{}
	first := map[string]time.Time{}
	last := map[string]time.Time{}
	for _, e := range log {
		if e.Method != "generateContent" {
			continue
		}
		st.ByStatus[strconv.Itoa(e.Status)]++
		st.ByOutcome[e.Outcome]++
		if !counted(e) {
			continue
		}
		st.Requests++
		ms := st.Models[e.Model]
		if ms == nil {
			ms = &ModelStats{Quota429: map[Dimension]int{}, Utilisation: map[Dimension]float64{}}
			st.Models[e.Model] = ms
		}
		ms.Requests++
		if e.Charged {
			ms.Charged++
			ms.InputTokens += e.InputTokens
			ms.OutputTokens += e.OutputTokens
		}
		if e.Status == http.StatusOK {
			ms.OK++
			if st.Served == nil {
				st.Served = map[string]int{}
			}
			st.Served[e.ServedTier]++
			if e.Tier != "" && e.ServedTier != e.Tier {
				st.Downgrades++
			}
		}
		switch e.Outcome {
		case "quota":
			st.Quota429++
			for _, d := range e.Dimensions {
				ms.Quota429[d]++
			}
		case "quota_zero":
			st.Quota429++
			ms.QuotaZero429++
		case "capacity":
			st.Capacity429++
			ms.Capacity429++
		}
		if f, ok := first[e.Model]; !ok || e.Received.Before(f) {
			first[e.Model] = e.Received
		}
		if e.Received.After(last[e.Model]) {
			last[e.Model] = e.Received
		}
		if e.TaskID != "" {
			calls[e.TaskID]++
		}
	}
	st.Tasks = len(calls)
	answers := map[string]int{}
	for _, e := range log {
		if e.TaskID != "" && e.Status == http.StatusOK && (e.Method == "generateContent" || e.Method == "batchEntry") {
			answers[e.TaskID]++
		}
	}
	st.AnsweredTasks = len(answers)
	for id, n := range answers {
		if n > 1 {
			if st.AnsweredTwice == nil {
				st.AnsweredTwice = map[string]int{}
			}
			st.AnsweredTwice[id] = n
		}
	}
	st.Batch = s.batchStats(log)
	for id, n := range calls {
		if n > 1 {
			if st.DuplicateTasks == nil {
				st.DuplicateTasks = map[string]int{}
			}
			st.DuplicateTasks[id] = n
			st.DuplicateCalls += n - 1
		}
	}
	for id, ms := range st.Models {
		if m, ok := s.models[id]; ok {
			ms.Limits = m.Limits
		}
		ms.Violations, ms.Peaks = analyse(log, id, ms.Limits, safety)
		for _, d := range []Dimension{RPM, TPM, RPD} {
			if l := ms.Limits.of(d); l > 0 {
				p := map[Dimension]int64{RPM: ms.Peaks.RPM, TPM: ms.Peaks.TPM, RPD: ms.Peaks.RPD}[d]
				ms.Utilisation[d] = float64(p) / float64(l)
			}
		}
		if span := last[id].Sub(first[id]); span > 0 {
			mins := max(span.Minutes(), 1)
			ms.MeanPerMinute.Requests = float64(ms.Requests) / mins
			var toks int64
			for _, e := range log {
				if e.Model == id && counted(e) {
					toks += e.InputTokens
				}
			}
			ms.MeanPerMinute.InputTokens = float64(toks) / mins
		}
	}
	return st
}

// serveStats answers GET /_stats[?safety=0.95] with Stats as JSON.
func (s *Server) serveStats(w http.ResponseWriter, r *http.Request) {
	safety := 1.0
	if v := r.URL.Query().Get("safety"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 {
			writeError(w, errInvalid("safety must be a positive number"))
			return
		}
		safety = f
	}
	writeJSON(w, http.StatusOK, s.Stats(safety))
}
