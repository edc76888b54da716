// Package metrics owns gemq's OpenTelemetry instruments: their names,
// units and labels, and how they are recorded. Everything gemq alone knows
// about the quota at work (permits by outcome, how full each window is
// against its effective limit, reserved slots, estimate error, 429s by kind,
// terminal states, dead letters) goes through here; Cloud Run, Pub/Sub and
// Cloud Tasks export their own metrics.
//
// Labels are low-cardinality and closed: scope ("project/model"),
// dimension (a configured dimension's name, or "fifo", "spaced", "paced",
// "cooldown", "none"), outcome, kind. Never a prompt, a key, a task or job
// id.
//
// Recording never blocks: counters add to atomic cells in memory and a reader
// (Export's periodic OTLP push, or the local view's Local) collects them on
// its own goroutine. The gauges of window occupancy are observable: read
// from the limiter (Limiter.Usage, one Redis script per scope) when a reader
// collects, never per permit.
//
// The names are Prometheus-style on purpose: Cloud Monitoring's OTLP
// endpoint (telemetry.googleapis.com) stores them as Managed Prometheus
// metrics, prometheus.googleapis.com/<name>/<kind>, queried with PromQL by
// the dashboard and alerts in terraform/monitoring.tf. README.md,
// "Observability", has the table.
package metrics

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/gemq-dev/gemq/internal/gemini"
	"github.com/gemq-dev/gemq/internal/limiter"
)

// MeterName is the instrumentation scope of every gemq instrument.
const MeterName = "github.com/gemq-dev/gemq"

// Instrument names (see the package doc and README.md, "Observability").
const (
	// Permits counts limiter decisions: labels scope, kind (acquire,
	// claim), outcome (granted, reserved, denied, rejected), dimension
	// (what held it back: a dimension's name, "fifo", "spaced", "paced",
	// "cooldown"; "none" when granted).
	Permits = "gemq_permits_total"
	// WindowUsed is what the admissions this process was granted hold in
	// each sliding dimension's window (the limiter's: period + guard) now:
	// labels scope, dimension. Summed over the processes, never above
	// WindowLimit.
	WindowUsed = "gemq_window_used"
	// DayUsed is what today's Pacific day holds of each daily dimension,
	// scope-wide (the limiter's counter): labels scope, dimension.
	DayUsed = "gemq_day_used"
	// WindowLimit is each dimension's effective capacity (adapted by 429s
	// and successes): labels scope, dimension.
	WindowLimit = "gemq_window_limit"
	// WindowConfigured is each dimension's configured capacity
	// (floor(safety × limit)): labels scope, dimension.
	WindowConfigured = "gemq_window_configured_limit"
	// ReservedSlots counts the tasks waiting for a reserved slot: label scope.
	ReservedSlots = "gemq_reserved_slots"
	// ReservedAhead is how far ahead the last reserved slot lies, in
	// seconds (0 when none): label scope.
	ReservedAhead = "gemq_reserved_ahead_seconds"
	// EstimateError is the input-token estimate's relative error,
	// estimated / actual - 1, per successful call: label scope.
	EstimateError = "gemq_estimate_error_ratio"
	// Gemini429 counts 429s from Gemini: labels scope, kind
	// (quota_per_minute, quota_per_day, quota_zero, capacity).
	Gemini429 = "gemq_gemini_429_total"
	// Deliveries counts worker deliveries by outcome (the worker's answer:
	// succeeded, failed, deferred, duplicate, dead_letter, ...).
	Deliveries = "gemq_deliveries_total"
	// Terminal counts tasks reaching a terminal state, as the delivery
	// that settles the task answers: label outcome (succeeded, failed,
	// dead_letter: failed after its retries, and dead-lettered).
	Terminal = "gemq_tasks_terminal_total"
	// DeadLetters counts messages published to the dead-letter topic by
	// the worker: label kind (dead_letter: retries exhausted; poison:
	// undecodable or invalid; foreign: not one of its job's tasks).
	DeadLetters = "gemq_dead_letters_total"
)

// Inspector reads a scope's occupancy (*limiter.Limiter).
type Inspector interface {
	Usage(ctx context.Context, scope limiter.Scope) (limiter.Usage, error)
}

var _ Inspector = (*limiter.Limiter)(nil)

// Recorder records gemq's metrics on one MeterProvider. It is safe for
// concurrent use; a nil *Recorder records nothing.
//
// The counters are observable: a recording adds to an atomic cell (one per
// instrument and label set, created at its first use) and a reader reads the
// cells when it collects. A recording therefore costs a map lookup and an
// atomic add, and never touches the SDK.
type Recorder struct {
	permits, g429, deliveries, terminal, deadLetters metric.Int64ObservableCounter
	estErr                                           metric.Float64Histogram

	mu     sync.RWMutex
	cells  map[labelKey]*cell
	scopes sync.Map // limiter.Scope -> struct{}: the scopes the gauges report
	insp   Inspector
	win    *windows
	regs   []metric.Registration
}

// cell is one counter series.
type cell struct {
	inst metric.Int64ObservableCounter
	opt  metric.ObserveOption
	n    atomic.Int64
}

// New creates gemq's instruments on mp. insp, when not nil, feeds the
// gauges of limits, days and reserved slots, and quotas the occupancy of
// the sliding windows (for every scope a permit was recorded for).
func New(mp metric.MeterProvider, insp Inspector, quotas limiter.Config) (*Recorder, error) {
	m := mp.Meter(MeterName)
	r := &Recorder{insp: insp, cells: map[labelKey]*cell{}, win: newWindows(quotas)}
	var err error
	counter := func(name, unit, desc string) metric.Int64ObservableCounter {
		c, e := m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		if err == nil {
			err = e
		}
		return c
	}
	r.permits = counter(Permits, "{permit}", "Limiter decisions by kind, outcome and the dimension that held them back")
	r.g429 = counter(Gemini429, "{response}", "429 answers from Gemini by kind")
	r.deliveries = counter(Deliveries, "{delivery}", "Worker deliveries by outcome")
	r.terminal = counter(Terminal, "{task}", "Tasks reaching a terminal state")
	r.deadLetters = counter(DeadLetters, "{message}", "Messages the worker dead-lettered, by kind")
	if err != nil {
		return nil, err
	}
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		r.mu.RLock()
		defer r.mu.RUnlock()
		for _, c := range r.cells {
			o.ObserveInt64(c.inst, c.n.Load(), c.opt)
		}
		return nil
	}, r.permits, r.g429, r.deliveries, r.terminal, r.deadLetters)
	if err != nil {
		return nil, err
	}
	r.regs = append(r.regs, reg)
	if r.estErr, err = m.Float64Histogram(EstimateError, metric.WithUnit("1"),
		metric.WithDescription("Relative error of the input-token estimate: estimated / actual - 1"),
		metric.WithExplicitBucketBoundaries(-0.5, -0.25, -0.1, -0.05, -0.01, 0.01, 0.05, 0.1, 0.25, 0.5, 1)); err != nil {
		return nil, err
	}
	if insp != nil {
		if err := r.observe(m); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// observe registers the occupancy gauges.
func (r *Recorder) observe(m metric.Meter) error {
	used, err := m.Int64ObservableGauge(WindowUsed, metric.WithUnit("{unit}"),
		metric.WithDescription("What this process's admissions hold in each sliding window now, in the dimension's unit"))
	if err != nil {
		return err
	}
	day, err := m.Int64ObservableGauge(DayUsed, metric.WithUnit("{unit}"),
		metric.WithDescription("What today's Pacific day holds of each daily dimension"))
	if err != nil {
		return err
	}
	limit, err := m.Float64ObservableGauge(WindowLimit, metric.WithUnit("{unit}"),
		metric.WithDescription("Effective (adapted) capacity of each dimension"))
	if err != nil {
		return err
	}
	configured, err := m.Float64ObservableGauge(WindowConfigured, metric.WithUnit("{unit}"),
		metric.WithDescription("Configured capacity of each dimension: floor(safety x limit)"))
	if err != nil {
		return err
	}
	reserved, err := m.Int64ObservableGauge(ReservedSlots, metric.WithUnit("{task}"),
		metric.WithDescription("Tasks waiting for a reserved slot"))
	if err != nil {
		return err
	}
	ahead, err := m.Float64ObservableGauge(ReservedAhead, metric.WithUnit("s"),
		metric.WithDescription("How far ahead the last reserved slot lies"))
	if err != nil {
		return err
	}
	reg, err := m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		now := time.Now()
		r.scopes.Range(func(k, _ any) bool {
			s := k.(limiter.Scope)
			sc := attribute.String("scope", s.String())
			dims, n := r.win.used(s, now)
			for i, d := range dims {
				o.ObserveInt64(used, n[i], metric.WithAttributes(sc, attribute.String("dimension", d.Name)))
			}
			u, err := r.insp.Usage(ctx, s)
			if err != nil {
				return true // Redis down: no point this time, the other scopes may answer
			}
			for _, d := range u.Dimensions {
				set := metric.WithAttributes(sc, attribute.String("dimension", d.Name))
				if d.Daily {
					o.ObserveInt64(day, d.Used, set)
				}
				o.ObserveFloat64(limit, d.Limit, set)
				o.ObserveFloat64(configured, d.Configured, set)
			}
			o.ObserveInt64(reserved, u.Reserved, metric.WithAttributes(sc))
			secs := 0.0
			if !u.LastSlot.IsZero() {
				secs = max(0, u.LastSlot.Sub(u.At).Seconds())
			}
			o.ObserveFloat64(ahead, secs, metric.WithAttributes(sc))
			return true
		})
		return nil
	}, used, day, limit, configured, reserved, ahead)
	if err == nil {
		r.regs = append(r.regs, reg)
	}
	return err
}

// Close unregisters the callbacks: the Recorder reports nothing more.
func (r *Recorder) Close() error {
	if r == nil {
		return nil
	}
	var errs []error
	for _, reg := range r.regs {
		errs = append(errs, reg.Unregister())
	}
	return errors.Join(errs...)
}

// labelKey identifies a counter series: the instrument, then its label
// values by position (a scope takes two slots, project and model).
type labelKey [8]string

// cell returns the series k of inst, created on first use with the labels
// build returns.
func (r *Recorder) cell(k labelKey, inst metric.Int64ObservableCounter, build func() []attribute.KeyValue) *cell {
	r.mu.RLock()
	c, ok := r.cells[k]
	r.mu.RUnlock()
	if ok {
		return c
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.cells[k]; ok {
		return c
	}
	c = &cell{inst: inst, opt: metric.WithAttributeSet(attribute.NewSet(build()...))}
	r.cells[k] = c
	return c
}

// pairs returns the attributes name=value for kv (name, value, ...).
func pairs(kv ...string) []attribute.KeyValue {
	var as []attribute.KeyValue
	for i := 0; i+1 < len(kv); i += 2 {
		as = append(as, attribute.String(kv[i], kv[i+1]))
	}
	return as
}

// add adds 1 to the series of inst (named name) with labels kv (name,
// value pairs; no scope).
func (r *Recorder) add(name string, inst metric.Int64ObservableCounter, kv ...string) {
	k := labelKey{name}
	copy(k[1:], kv)
	r.cell(k, inst, func() []attribute.KeyValue { return pairs(kv...) }).n.Add(1)
}

// Permit records one limiter decision; kind is "acquire" or "claim".
func (r *Recorder) Permit(ctx context.Context, kind string, p limiter.Permit) {
	if r == nil {
		return
	}
	if p.Outcome == limiter.Granted {
		r.win.granted(p, time.Now())
	}
	dim := heldBy(p)
	k := labelKey{Permits, p.Scope.Project, p.Scope.Model, kind, string(p.Outcome), dim}
	r.cell(k, r.permits, func() []attribute.KeyValue {
		r.scopes.Store(p.Scope, struct{}{}) // first decision in the scope: the gauges report it
		return pairs("scope", p.Scope.String(), "kind", kind, "outcome", string(p.Outcome), "dimension", dim)
	}).n.Add(1)
}

// Released records a permit given back: its admission no longer counts.
func (r *Recorder) Released(p limiter.Permit) {
	if r != nil && p.Outcome == limiter.Granted {
		r.win.released(p)
	}
}

// heldBy is the dimension label of a decision: what Permit.Reason names
// before any ":" (a dimension, "fifo", "cooldown"), "none" when granted.
func heldBy(p limiter.Permit) string {
	if p.Outcome == limiter.Granted || p.Reason == "" {
		return "none"
	}
	name, _, _ := strings.Cut(p.Reason, ":")
	return name
}

// Estimate records the estimate's relative error for one successful call.
func (r *Recorder) Estimate(ctx context.Context, scope limiter.Scope, estimated, actual int64) {
	if r == nil || actual <= 0 || estimated <= 0 {
		return
	}
	r.estErr.Record(ctx, float64(estimated)/float64(actual)-1,
		metric.WithAttributeSet(attribute.NewSet(attribute.String("scope", scope.String()))))
}

// Failure records a failed Gemini call: 429s by kind.
func (r *Recorder) Failure(ctx context.Context, scope limiter.Scope, f gemini.Failure) {
	if r == nil {
		return
	}
	switch f.Kind {
	case gemini.QuotaPerMinute, gemini.QuotaPerDay, gemini.QuotaZero, gemini.Capacity:
		k := labelKey{Gemini429, scope.Project, scope.Model, string(f.Kind)}
		r.cell(k, r.g429, func() []attribute.KeyValue {
			return pairs("scope", scope.String(), "kind", string(f.Kind))
		}).n.Add(1)
	}
}

// Delivery records how the worker answered one delivery (the lifecycle's
// Outcome.Name): every outcome in Deliveries, the terminal ones in
// Terminal, the dead-lettered ones in DeadLetters.
func (r *Recorder) Delivery(ctx context.Context, outcome string) {
	if r == nil {
		return
	}
	r.add(Deliveries, r.deliveries, "outcome", outcome)
	switch outcome {
	case "succeeded", "failed", "dead_letter":
		r.add(Terminal, r.terminal, "outcome", outcome)
	}
	switch outcome {
	case "dead_letter", "poison", "foreign":
		r.add(DeadLetters, r.deadLetters, "kind", outcome)
	}
}
