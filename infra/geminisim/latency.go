package geminisim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Latency is a model of how long the stand-in takes to answer a request it processes, in stand-in time
// (scaled like the quota minute). The zero value answers at once.
type Latency struct {
	// Kind is "" (none), "fixed", "uniform" or "lognormal".
	Kind string
	// Fixed is the latency of Kind "fixed".
	Fixed time.Duration
	// Min and Max bound Kind "uniform".
	Min, Max time.Duration
	// Median and Sigma (of the underlying normal) shape Kind "lognormal".
	Median time.Duration
	Sigma  float64
	// Cap, if positive, bounds any sample (log-normal tails are long).
	Cap time.Duration
}

// ParseLatency reads a latency spec: "" or "none"; "fixed:800ms"; "uniform:200ms,2s"; or
// "lognormal:median=1.5s,sigma=0.5[,max=20s]".
func ParseLatency(spec string) (Latency, error) {
	kind, args, _ := strings.Cut(strings.TrimSpace(spec), ":")
	var l Latency
	var err error
	switch kind {
	case "", "none":
		return Latency{}, nil
	case "fixed":
		l.Kind = "fixed"
		l.Fixed, err = time.ParseDuration(args)
	case "uniform":
		l.Kind = "uniform"
		lo, hi, ok := strings.Cut(args, ",")
		if !ok {
			return Latency{}, fmt.Errorf("latency %q: uniform needs min,max", spec)
		}
		if l.Min, err = time.ParseDuration(lo); err == nil {
			l.Max, err = time.ParseDuration(hi)
		}
		if err == nil && l.Max < l.Min {
			err = fmt.Errorf("max below min")
		}
	case "lognormal":
		l.Kind = "lognormal"
		for kv := range strings.SplitSeq(args, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "median":
				l.Median, err = time.ParseDuration(v)
			case "sigma":
				l.Sigma, err = strconv.ParseFloat(v, 64)
			case "max":
				l.Cap, err = time.ParseDuration(v)
			default:
				err = fmt.Errorf("unknown parameter %q", k)
			}
			if err != nil {
				break
			}
		}
		if err == nil && (l.Median <= 0 || l.Sigma < 0) {
			err = fmt.Errorf("lognormal needs median > 0 and sigma ≥ 0")
		}
	default:
		return Latency{}, fmt.Errorf("latency %q: unknown kind %q (fixed, uniform, lognormal)", spec, kind)
	}
	if err != nil {
		return Latency{}, fmt.Errorf("latency %q: %w", spec, err)
	}
	return l, nil
}

// String formats the latency as ParseLatency reads it.
func (l Latency) String() string {
	switch l.Kind {
	case "fixed":
		return "fixed:" + l.Fixed.String()
	case "uniform":
		return "uniform:" + l.Min.String() + "," + l.Max.String()
	case "lognormal":
		s := fmt.Sprintf("lognormal:median=%s,sigma=%g", l.Median, l.Sigma)
		if l.Cap > 0 {
			s += ",max=" + l.Cap.String()
		}
		return s
	}
	return "none"
}

func (l Latency) sample(r *rand.Rand) time.Duration {
	var d time.Duration
	switch l.Kind {
	case "fixed":
		d = l.Fixed
	case "uniform":
		d = l.Min + time.Duration(r.Float64()*float64(l.Max-l.Min))
	case "lognormal":
		d = time.Duration(float64(l.Median) * math.Exp(l.Sigma*r.NormFloat64()))
	}
	if l.Cap > 0 && d > l.Cap {
		d = l.Cap
	}
	return d
}
