package bench

import (
	"math"
	"slices"
	"time"
)

// Sample is one call (or admission) at a time, costing Units of the
// dimension being analysed (1 for requests, input tokens for TPM).
type Sample struct {
	At    time.Time
	Units int64
}

// PeakWindow returns the largest total of Units in any sliding window
// (x-period, x] over samples (need not be sorted), and the window's end x.
// Samples at the same instant all count in a window ending there. It returns
// 0 and the zero time for no samples.
func PeakWindow(samples []Sample, period time.Duration) (peak int64, end time.Time) {
	s := sortedSamples(samples)
	var sum int64
	lo := 0
	for j := range s {
		sum += s[j].Units
		if j+1 < len(s) && s[j+1].At.Equal(s[j].At) {
			continue
		}
		for !s[lo].At.After(s[j].At.Add(-period)) {
			sum -= s[lo].Units
			lo++
		}
		if sum > peak {
			peak, end = sum, s[j].At
		}
	}
	return peak, end
}

func sortedSamples(samples []Sample) []Sample {
	s := slices.Clone(samples)
	slices.SortStableFunc(s, func(a, b Sample) int { return a.At.Compare(b.At) })
	return s
}

// TheoreticalMin is the shortest time, from the first call to the last one,
// in which calls totalling units can be made when no window of length period
// may hold more than capacity: (ceil(units/capacity) − 1) × period. The
// first window's burst is counted (capacity calls at once at time 0, the
// next capacity at period, …); it is a lower bound because [0, kP] is
// covered by k+1 windows of length ≤ P, so it holds at most (k+1)×capacity.
// It returns 0 when units ≤ capacity and a negative duration for a
// non-positive capacity.
func TheoreticalMin(units, capacity int64, period time.Duration) time.Duration {
	if capacity <= 0 {
		return -1
	}
	if units <= 0 {
		return 0
	}
	windows := (units + capacity - 1) / capacity
	return time.Duration(windows-1) * period
}

// Capacity is floor(safety × limit), the limiter's per-window budget (the
// same rounding as limiter.Quota.Capacity).
func Capacity(limit int64, safety float64) int64 {
	return int64(math.Floor(safety*float64(limit) + 1e-9))
}

// WindowRates splits the time from the first sample onwards into
// consecutive windows of length period and returns the Units in each
// complete window (the trailing partial window is left out) and the mean
// Units per period over the whole span first..last (0 for fewer than two
// distinct instants).
func WindowRates(samples []Sample, period time.Duration) (full []int64, meanPerPeriod float64) {
	s := sortedSamples(samples)
	if len(s) == 0 {
		return nil, 0
	}
	first, last := s[0].At, s[len(s)-1].At
	var total int64
	for _, x := range s {
		total += x.Units
		k := int(x.At.Sub(first) / period)
		for len(full) <= k {
			full = append(full, 0)
		}
		full[k] += x.Units
	}
	if n := int(last.Sub(first) / period); n < len(full) {
		full = full[:n] // the window holding the last sample is partial
	}
	if span := last.Sub(first); span > 0 {
		meanPerPeriod = float64(total) * float64(period) / float64(span)
	}
	return full, meanPerPeriod
}

// Quantile returns the q-quantile (0 ≤ q ≤ 1, nearest rank) of ds, 0 for
// none.
func Quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}
