package limiter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Unit is what a dimension counts.
type Unit string

const (
	// Requests counts calls: each call costs Cost.Requests (normally 1).
	Requests Unit = "requests"
	// InputTokens counts prompt tokens: each call costs Cost.InputTokens.
	InputTokens Unit = "input_tokens"
)

// PacificDay is the value of a dimension's "per" field for a daily quota that
// resets at midnight America/Los_Angeles, as Gemini's requests-per-day do.
const PacificDay = "pacific_day"

// Scope is one quota scope: Gemini quotas apply per Google Cloud project and
// model. Project "*" in a configuration matches any project.
type Scope struct {
	Project string `json:"project"`
	Model   string `json:"model"`
}

// String returns "project/model".
func (s Scope) String() string { return s.Project + "/" + s.Model }

// Cost is what one Gemini call consumes: normally one request plus its
// (estimated) input tokens. Negative values are invalid.
type Cost struct {
	Requests    int64 `json:"requests"`
	InputTokens int64 `json:"input_tokens"`
	// Estimate, when set (by Limiter.Estimate), says how InputTokens was
	// estimated, so Settle can learn from the actual count.
	Estimate *Estimate `json:"estimate,omitempty"`
}

// of returns the part of c that unit u counts.
func (c Cost) of(u Unit) int64 {
	if u == InputTokens {
		return c.InputTokens
	}
	return c.Requests
}

// Dimension is one limit of a scope: either a sliding window (Period > 0)
// or a Pacific calendar day (Per == PacificDay).
type Dimension struct {
	// Name identifies the dimension in reasons, keys and violations
	// ([A-Za-z0-9_-], 1-32 characters, unique within the scope).
	Name string
	// Unit is what it counts.
	Unit Unit
	// Limit is Gemini's limit; the limiter admits at most
	// floor(Safety × Limit) (see Quota.Capacity). For an adaptive
	// dimension it is the ceiling.
	Limit int64
	// Adaptive, when set, makes the limit a range the limiter moves in
	// (configured as "limit": "adaptive" with "start", "floor", "ceiling"):
	// it starts at Start and is lowered by 429s and raised by successes
	// (see Limiter.Throttled), never below Floor nor above Limit. Nil: the
	// limit is fixed (it is still lowered by 429s, see Limiter).
	Adaptive *Adaptive
	// Period is the sliding window's length; zero for a daily dimension.
	Period time.Duration
	// Per is PacificDay for a daily dimension, empty otherwise.
	Per string
}

// Adaptive is the range of an adaptive dimension (Dimension.Limit is the
// ceiling): Floor <= Start <= ceiling.
type Adaptive struct {
	Start, Floor int64
}

// Daily reports whether d resets at Pacific midnight instead of sliding.
func (d Dimension) Daily() bool { return d.Per == PacificDay }

// Quota is the configured quota of one scope, with the global settings
// copied in so it is self-contained.
type Quota struct {
	// Project and Model as configured (Project may be "*").
	Project, Model string
	// Dimensions in configuration order.
	Dimensions []Dimension
	// Safety is the fraction of each limit the limiter may use, in (0, 1].
	Safety float64
	// Horizon is how far ahead a slot may be reserved; beyond it Acquire denies.
	Horizon time.Duration
	// Guard is added to every sliding period and covers the time between the
	// admission and the moment Gemini receives the call (see Limiter).
	Guard time.Duration
}

// Capacity returns floor(Safety × d.Limit): the most the limiter admits in
// one window (or day) of d (for an adaptive dimension, at its ceiling).
func (q Quota) Capacity(d Dimension) int64 {
	return q.capacityOf(d.Limit)
}

func (q Quota) capacityOf(limit int64) int64 {
	return int64(math.Floor(q.Safety*float64(limit) + 1e-9))
}

// StartCapacity is the capacity d starts at: Capacity(d), or for an
// adaptive dimension floor(Safety × Start).
func (q Quota) StartCapacity(d Dimension) int64 {
	if d.Adaptive != nil {
		return q.capacityOf(d.Adaptive.Start)
	}
	return q.Capacity(d)
}

// FloorCapacity is the lowest capacity adaptation may bring d to:
// floor(Safety × Floor) for an adaptive dimension, else a tenth of
// Capacity(d) (at least 1).
func (q Quota) FloorCapacity(d Dimension) int64 {
	if d.Adaptive != nil {
		return max(1, q.capacityOf(d.Adaptive.Floor))
	}
	return max(1, q.Capacity(d)/10)
}

// Config is a parsed quota configuration. The zero value has no scopes.
// It is immutable once parsed and safe for concurrent use.
type Config struct {
	// Safety is the default fraction of each limit used ("safety", default 0.95).
	Safety float64
	// Horizon is how far ahead reservations go ("horizon", default 15m, at most 24h).
	Horizon time.Duration
	// Guard is the guard time added to sliding periods ("guard", default 1s).
	Guard time.Duration
	// Scopes in configuration order.
	Scopes []Quota
}

// Defaults of the global settings.
const (
	DefaultSafety  = 0.95
	DefaultHorizon = 15 * time.Minute
	DefaultGuard   = time.Second
	// MaxHorizon bounds Horizon so a reservation lands at most two Pacific
	// days ahead (the script is handed four days of boundaries).
	MaxHorizon = 24 * time.Hour
)

// ConfigError is a configuration error naming the offending field, e.g.
// "scopes[0].dimensions[1].period".
type ConfigError struct {
	// Field is the JSON path of the offending value ("" for the whole document,
	// or the environment variable's name).
	Field string
	// Msg says what is wrong.
	Msg string
}

func (e *ConfigError) Error() string {
	if e.Field == "" {
		return "quota config: " + e.Msg
	}
	return "quota config: " + e.Field + ": " + e.Msg
}

func cfgErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// ParseConfig parses a quota configuration (the GEMQ_QUOTAS format):
//
//	{"safety": 0.95, "horizon": "15m", "guard": "1s", "scopes": [
//	  {"project": "*", "model": "gemini-2.5-flash", "dimensions": [
//	    {"name": "rpm", "unit": "requests", "limit": 1000, "period": "1m"},
//	    {"name": "tpm", "unit": "input_tokens", "limit": 1000000, "period": "1m"},
//	    {"name": "rpd", "unit": "requests", "limit": 10000, "per": "pacific_day"}]}]}
//
// A dimension's limit may be "adaptive", with "start", "floor" and
// "ceiling" (integers, floor <= start <= ceiling) — the natural shape for
// Vertex AI's Dynamic Shared Quota, which publishes no number:
//
//	{"name": "rpm", "unit": "requests", "limit": "adaptive", "start": 300, "floor": 30, "ceiling": 1000, "period": "1m"}
//
// Unknown fields are errors. Each scope may override "safety", "horizon" and
// "guard". Durations are Go durations ("1m", "500ms") and must be whole
// milliseconds. Errors are *ConfigError values naming the field.
func ParseConfig(data []byte) (Config, error) {
	cfg := Config{Safety: DefaultSafety, Horizon: DefaultHorizon, Guard: DefaultGuard}
	var scopes []json.RawMessage
	err := decodeObject(data, "", map[string]func(json.RawMessage, string) error{
		"safety":  func(r json.RawMessage, f string) error { return parseSafety(r, f, &cfg.Safety) },
		"horizon": func(r json.RawMessage, f string) error { return parseHorizon(r, f, &cfg.Horizon) },
		"guard":   func(r json.RawMessage, f string) error { return parseGuard(r, f, &cfg.Guard) },
		"scopes":  func(r json.RawMessage, f string) error { return decodeArray(r, f, &scopes) },
	}, "scopes")
	if err != nil {
		return Config{}, err
	}
	if len(scopes) == 0 {
		return Config{}, cfgErr("scopes", "at least one scope is required")
	}
	seen := map[Scope]int{}
	for i, raw := range scopes {
		f := fmt.Sprintf("scopes[%d]", i)
		q, err := parseScope(raw, f, cfg)
		if err != nil {
			return Config{}, err
		}
		s := Scope{q.Project, q.Model}
		if j, dup := seen[s]; dup {
			return Config{}, cfgErr(f, "duplicate scope %s (also scopes[%d])", s, j)
		}
		seen[s] = i
		cfg.Scopes = append(cfg.Scopes, q)
	}
	return cfg, nil
}

func parseScope(raw json.RawMessage, f string, cfg Config) (Quota, error) {
	q := Quota{Safety: cfg.Safety, Horizon: cfg.Horizon, Guard: cfg.Guard}
	var dims []json.RawMessage
	err := decodeObject(raw, f, map[string]func(json.RawMessage, string) error{
		"project":    func(r json.RawMessage, f string) error { return parseName(r, f, &q.Project) },
		"model":      func(r json.RawMessage, f string) error { return parseName(r, f, &q.Model) },
		"safety":     func(r json.RawMessage, f string) error { return parseSafety(r, f, &q.Safety) },
		"horizon":    func(r json.RawMessage, f string) error { return parseHorizon(r, f, &q.Horizon) },
		"guard":      func(r json.RawMessage, f string) error { return parseGuard(r, f, &q.Guard) },
		"dimensions": func(r json.RawMessage, f string) error { return decodeArray(r, f, &dims) },
	}, "project", "model", "dimensions")
	if err != nil {
		return Quota{}, err
	}
	if len(dims) == 0 {
		return Quota{}, cfgErr(f+".dimensions", "at least one dimension is required")
	}
	names := map[string]int{}
	for i, raw := range dims {
		df := fmt.Sprintf("%s.dimensions[%d]", f, i)
		d, err := parseDimension(raw, df)
		if err != nil {
			return Quota{}, err
		}
		if j, dup := names[d.Name]; dup {
			return Quota{}, cfgErr(df+".name", "duplicate dimension name %q (also dimensions[%d])", d.Name, j)
		}
		names[d.Name] = i
		if q.Capacity(d) < 1 || q.StartCapacity(d) < 1 {
			return Quota{}, cfgErr(df+".limit", "limit %d × safety %g rounds down to 0", d.Limit, q.Safety)
		}
		q.Dimensions = append(q.Dimensions, d)
	}
	return q, nil
}

func parseLimit(r json.RawMessage, f string, dst *int64) error {
	if err := decodeValue(r, f, dst); err != nil {
		return err
	}
	if *dst < 1 || *dst > 1<<50 {
		return cfgErr(f, "%d must be between 1 and 2^50", *dst)
	}
	return nil
}

func parseDimension(raw json.RawMessage, f string) (Dimension, error) {
	var d Dimension
	var unit string
	var adaptive bool
	var start, floor, ceiling int64
	err := decodeObject(raw, f, map[string]func(json.RawMessage, string) error{
		"name": func(r json.RawMessage, f string) error {
			if err := decodeValue(r, f, &d.Name); err != nil {
				return err
			}
			if !nameRE.MatchString(d.Name) {
				return cfgErr(f, "%q must be 1-32 characters of [A-Za-z0-9_-]", d.Name)
			}
			return nil
		},
		"unit": func(r json.RawMessage, f string) error {
			if err := decodeValue(r, f, &unit); err != nil {
				return err
			}
			if Unit(unit) != Requests && Unit(unit) != InputTokens {
				return cfgErr(f, "%q is not one of %q, %q", unit, Requests, InputTokens)
			}
			d.Unit = Unit(unit)
			return nil
		},
		"limit": func(r json.RawMessage, f string) error {
			if string(bytes.TrimSpace(r)) == `"adaptive"` {
				adaptive = true
				return nil
			}
			return parseLimit(r, f, &d.Limit)
		},
		"start":   func(r json.RawMessage, f string) error { return parseLimit(r, f, &start) },
		"floor":   func(r json.RawMessage, f string) error { return parseLimit(r, f, &floor) },
		"ceiling": func(r json.RawMessage, f string) error { return parseLimit(r, f, &ceiling) },
		"period": func(r json.RawMessage, f string) error {
			if err := parseDuration(r, f, &d.Period); err != nil {
				return err
			}
			if d.Period < 10*time.Millisecond || d.Period > 31*24*time.Hour {
				return cfgErr(f, "%v must be between 10ms and 744h", d.Period)
			}
			return nil
		},
		"per": func(r json.RawMessage, f string) error {
			if err := decodeValue(r, f, &d.Per); err != nil {
				return err
			}
			if d.Per != PacificDay {
				return cfgErr(f, "%q is not %q", d.Per, PacificDay)
			}
			return nil
		},
	}, "name", "unit", "limit")
	if err != nil {
		return Dimension{}, err
	}
	switch {
	case adaptive && (start == 0 || floor == 0 || ceiling == 0):
		return Dimension{}, cfgErr(f, `"limit": "adaptive" requires start, floor and ceiling`)
	case adaptive && !(floor <= start && start <= ceiling):
		return Dimension{}, cfgErr(f, "adaptive limits must satisfy floor %d <= start %d <= ceiling %d", floor, start, ceiling)
	case adaptive:
		d.Limit, d.Adaptive = ceiling, &Adaptive{Start: start, Floor: floor}
	case start != 0 || floor != 0 || ceiling != 0:
		return Dimension{}, cfgErr(f, `start, floor and ceiling are only for "limit": "adaptive"`)
	}
	switch {
	case d.Period == 0 && d.Per == "":
		return Dimension{}, cfgErr(f, "one of period or per is required")
	case d.Period != 0 && d.Per != "":
		return Dimension{}, cfgErr(f+".per", "period and per are mutually exclusive")
	}
	return d, nil
}

func parseName(r json.RawMessage, f string, dst *string) error {
	if err := decodeValue(r, f, dst); err != nil {
		return err
	}
	if *dst == "" || len(*dst) > 128 || strings.ContainsFunc(*dst, func(r rune) bool { return r < 0x21 || r == 0x7f }) {
		return cfgErr(f, "%q must be 1-128 printable characters without spaces", *dst)
	}
	return nil
}

func parseSafety(r json.RawMessage, f string, dst *float64) error {
	if err := decodeValue(r, f, dst); err != nil {
		return err
	}
	if !(*dst > 0 && *dst <= 1) {
		return cfgErr(f, "%g must be in (0, 1]", *dst)
	}
	return nil
}

func parseHorizon(r json.RawMessage, f string, dst *time.Duration) error {
	if err := parseDuration(r, f, dst); err != nil {
		return err
	}
	if *dst < 0 || *dst > MaxHorizon {
		return cfgErr(f, "%v must be between 0 and %v", *dst, MaxHorizon)
	}
	return nil
}

func parseGuard(r json.RawMessage, f string, dst *time.Duration) error {
	if err := parseDuration(r, f, dst); err != nil {
		return err
	}
	if *dst < 0 || *dst > time.Hour {
		return cfgErr(f, "%v must be between 0 and 1h", *dst)
	}
	return nil
}

func parseDuration(r json.RawMessage, f string, dst *time.Duration) error {
	var s string
	if err := decodeValue(r, f, &s); err != nil {
		return err
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return cfgErr(f, "%q is not a duration like \"1m\" or \"500ms\"", s)
	}
	if d%time.Millisecond != 0 {
		return cfgErr(f, "%q must be a whole number of milliseconds", s)
	}
	*dst = d
	return nil
}

// decodeObject decodes a JSON object field by field, so that every error can
// name its field, and rejects unknown, duplicate and missing required fields.
func decodeObject(data []byte, path string, fields map[string]func(json.RawMessage, string) error, required ...string) error {
	var obj map[string]json.RawMessage
	if err := decodeValue(data, path, &obj); err != nil {
		return err
	}
	if obj == nil {
		return cfgErr(path, "must be an object")
	}
	if err := checkDuplicateKeys(data, path); err != nil {
		return err
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fn, ok := fields[k]
		if !ok {
			return cfgErr(join(path, k), "unknown field")
		}
		if err := fn(obj[k], join(path, k)); err != nil {
			return err
		}
	}
	for _, k := range required {
		if _, ok := obj[k]; !ok {
			return cfgErr(join(path, k), "required")
		}
	}
	return nil
}

func checkDuplicateKeys(data []byte, path string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil { // '{'
		return cfgErr(path, "%v", err)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return cfgErr(path, "%v", err)
		}
		k, _ := tok.(string)
		if seen[k] {
			return cfgErr(join(path, k), "duplicate field")
		}
		seen[k] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return cfgErr(join(path, k), "%v", err)
		}
	}
	return nil
}

func decodeArray(r json.RawMessage, f string, dst *[]json.RawMessage) error {
	if err := decodeValue(r, f, dst); err != nil {
		return err
	}
	if *dst == nil {
		return cfgErr(f, "must be an array")
	}
	return nil
}

// decodeValue decodes one JSON value strictly: no trailing data, and type
// errors reported against path.
func decodeValue(data []byte, path string, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(dst); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return cfgErr(path, "%s is not a valid %s", te.Value, typeName(dst))
		}
		return cfgErr(path, "invalid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return cfgErr(path, "unexpected data after the JSON value")
	}
	return nil
}

func typeName(dst any) string {
	switch dst.(type) {
	case *string:
		return "string"
	case *int64:
		return "integer"
	case *float64:
		return "number"
	case *[]json.RawMessage:
		return "array"
	default:
		return "object"
	}
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// LoadConfig loads the quota configuration from the environment through
// getenv: GEMQ_QUOTAS holds the JSON itself, GEMQ_QUOTAS_FILE the path of a
// file holding it. Exactly one of the two must be set; otherwise, or when the
// file cannot be read, the error is a *ConfigError naming the variable.
func LoadConfig(getenv func(string) string) (Config, error) {
	inline, file := getenv("GEMQ_QUOTAS"), getenv("GEMQ_QUOTAS_FILE")
	switch {
	case inline != "" && file != "":
		return Config{}, cfgErr("GEMQ_QUOTAS", "set only one of GEMQ_QUOTAS and GEMQ_QUOTAS_FILE")
	case inline != "":
		return ParseConfig([]byte(inline))
	case file != "":
		data, err := os.ReadFile(file)
		if err != nil {
			return Config{}, cfgErr("GEMQ_QUOTAS_FILE", "read: %v", err)
		}
		cfg, err := ParseConfig(data)
		if err != nil {
			return Config{}, fmt.Errorf("%s: %w", file, err)
		}
		return cfg, nil
	default:
		return Config{}, cfgErr("GEMQ_QUOTAS", "one of GEMQ_QUOTAS or GEMQ_QUOTAS_FILE is required")
	}
}

// Quota returns the quota of scope s: the scope configured for exactly
// s.Project and s.Model if any, else the one for project "*" and s.Model.
// ok is false when neither is configured.
func (c Config) Quota(s Scope) (q Quota, ok bool) {
	var wild *Quota
	for i := range c.Scopes {
		cq := &c.Scopes[i]
		if cq.Model != s.Model {
			continue
		}
		if cq.Project == s.Project {
			return *cq, true
		}
		if cq.Project == "*" {
			wild = cq
		}
	}
	if wild != nil {
		return *wild, true
	}
	return Quota{}, false
}

// Models returns the distinct models named in the configuration, sorted.
func (c Config) Models() []string {
	var ms []string
	for _, q := range c.Scopes {
		if !slices.Contains(ms, q.Model) {
			ms = append(ms, q.Model)
		}
	}
	slices.Sort(ms)
	return ms
}
