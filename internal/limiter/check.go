package limiter

import (
	"fmt"
	"slices"
	"time"
)

// Event is one call as seen from Gemini's side (or one admission, when
// checking the limiter's own log): when it happened and what it cost.
type Event struct {
	At   time.Time
	Cost Cost
}

// Violation is a window (or Pacific day) of one dimension holding more than
// the quota's capacity.
type Violation struct {
	// Dimension is the dimension's name.
	Dimension string
	// Start and End bound the window (Start, End]; for a daily dimension
	// [Start, End) is the Pacific day.
	Start, End time.Time
	// Used is the total in the window; Capacity is floor(Safety × Limit).
	Used, Capacity int64
}

func (v Violation) String() string {
	return fmt.Sprintf("%s: %d > %d in (%s, %s]", v.Dimension, v.Used, v.Capacity,
		v.Start.Format(time.RFC3339Nano), v.End.Format(time.RFC3339Nano))
}

// CheckWindows checks the limiter's invariant over events: for every sliding
// dimension of q, the cost in ANY window (x-Period, x] is at most
// q.Capacity(d), and for every daily dimension the cost per Pacific day is at
// most q.Capacity(d). It returns the violations found (for a sliding
// dimension, the worst window ending at each offending event), nil when there
// are none. Events need not be sorted. Other packages and benchmarks use it on
// the log of a Gemini stand-in; to check the script's admissions against its
// own, wider windows, pass WithGuard(q).
func CheckWindows(events []Event, q Quota) []Violation {
	evs := slices.Clone(events)
	slices.SortStableFunc(evs, func(a, b Event) int { return a.At.Compare(b.At) })
	var out []Violation
	for _, d := range q.Dimensions {
		capacity := q.Capacity(d)
		if d.Daily() {
			perDay := map[time.Time]int64{}
			var order []time.Time
			for _, e := range evs {
				day := PacificDayStart(e.At, 0)
				if _, ok := perDay[day]; !ok {
					order = append(order, day)
				}
				perDay[day] += e.Cost.of(d.Unit)
			}
			for _, day := range order {
				if perDay[day] > capacity {
					out = append(out, Violation{d.Name, day, PacificDayStart(day, 1), perDay[day], capacity})
				}
			}
			continue
		}
		// Two pointers: the window ending at event j holds events (lo..j]
		// with At > evs[j].At - Period; events at the same instant all count.
		var sum int64
		lo := 0
		for j := 0; j < len(evs); j++ {
			sum += evs[j].Cost.of(d.Unit)
			if j+1 < len(evs) && evs[j+1].At.Equal(evs[j].At) {
				continue // the window ending here includes the later equal events
			}
			for !evs[lo].At.After(evs[j].At.Add(-d.Period)) {
				sum -= evs[lo].Cost.of(d.Unit)
				lo++
			}
			if sum > capacity {
				out = append(out, Violation{d.Name, evs[j].At.Add(-d.Period), evs[j].At, sum, capacity})
			}
		}
	}
	return out
}

// WithGuard returns q with every sliding period lengthened by q.Guard: the
// windows the limiter itself keeps, which its admissions (Permit.At values)
// never overfill.
func WithGuard(q Quota) Quota {
	dims := slices.Clone(q.Dimensions)
	for i := range dims {
		if !dims[i].Daily() {
			dims[i].Period += q.Guard
		}
	}
	q.Dimensions = dims
	return q
}
