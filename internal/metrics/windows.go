package metrics

import (
	"sync"
	"time"

	"github.com/gemq-dev/gemq/internal/limiter"
)

// windows keeps, per scope, the admissions this process was granted (each
// permit's At and cost) for as long as a sliding window holds them: the
// occupancy of the windows now. The limiter cannot tell it (its log keeps
// what the next decisions need, which once reservations reach a window
// ahead no longer includes the current window), but the sum over the
// processes holding permits can: every admission is granted to exactly
// one of them. It is safe for concurrent use.
type windows struct {
	quotas limiter.Config
	mu     sync.Mutex
	scopes map[limiter.Scope]*scopeWindows
}

type scopeWindows struct {
	dims   []limiter.Dimension // the sliding ones
	win    []time.Duration     // their windows as the limiter keeps them: period + guard
	maxWin time.Duration
	ents   []admission // in the order granted (At nearly ordered)
}

type admission struct {
	id       string
	at       time.Time
	req, tok int64
}

func newWindows(quotas limiter.Config) *windows {
	return &windows{quotas: quotas, scopes: map[limiter.Scope]*scopeWindows{}}
}

// scope returns the scope's windows (nil when it has no quota or no sliding
// dimension). Call with mu held.
func (w *windows) scope(s limiter.Scope) *scopeWindows {
	if sw, ok := w.scopes[s]; ok {
		return sw
	}
	var sw *scopeWindows
	if q, ok := w.quotas.Quota(s); ok {
		sw = &scopeWindows{}
		for _, d := range q.Dimensions {
			if !d.Daily() {
				sw.dims = append(sw.dims, d)
				sw.win = append(sw.win, d.Period+q.Guard)
				sw.maxWin = max(sw.maxWin, d.Period+q.Guard)
			}
		}
		if len(sw.dims) == 0 {
			sw = nil
		}
	}
	w.scopes[s] = sw
	return sw
}

// granted records a Granted permit's admission.
func (w *windows) granted(p limiter.Permit, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	sw := w.scope(p.Scope)
	if sw == nil {
		return
	}
	// Drop what no window holds any more (the oldest first; a few out of
	// order stay until the next drop).
	drop := 0
	for drop < len(sw.ents) && !sw.ents[drop].at.After(now.Add(-sw.maxWin)) {
		drop++
	}
	sw.ents = append(sw.ents[drop:], admission{id: p.ID, at: p.At, req: p.Cost.Requests, tok: p.Cost.InputTokens})
}

// released forgets the admission of a permit given back (the limiter lets
// others use its room at once).
func (w *windows) released(p limiter.Permit) {
	w.mu.Lock()
	defer w.mu.Unlock()
	sw := w.scopes[p.Scope]
	if sw == nil {
		return
	}
	for i := len(sw.ents) - 1; i >= 0; i-- {
		if sw.ents[i].id == p.ID {
			sw.ents = append(sw.ents[:i], sw.ents[i+1:]...)
			return
		}
	}
}

// used returns, per sliding dimension of s, what this process's
// admissions hold in the window (now - period - guard, now].
func (w *windows) used(s limiter.Scope, now time.Time) (dims []limiter.Dimension, used []int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	sw := w.scopes[s]
	if sw == nil {
		return nil, nil
	}
	used = make([]int64, len(sw.dims))
	for _, e := range sw.ents {
		if e.at.After(now) {
			continue
		}
		for i, d := range sw.dims {
			if e.at.After(now.Add(-sw.win[i])) {
				if d.Unit == limiter.InputTokens {
					used[i] += e.tok
				} else {
					used[i] += e.req
				}
			}
		}
	}
	return sw.dims, used
}
