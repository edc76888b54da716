package main

import (
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"
)

// tierFlags are the --service-tier and --deadline flags of submit and run.
type tierFlags struct {
	tier, deadline *string
}

func addTierFlags(fs *flag.FlagSet) tierFlags {
	return tierFlags{
		tier: fs.String("service-tier", "", "Gemini service tier of every request: standard (default), flex (half price, may be shed),\n"+
			"priority (up to twice the price, Tier 2/3 projects), batch (half price, the Batch API: 24 h target),\n"+
			"or auto with --deadline (the cheapest expected to finish by it)"),
		deadline: fs.String("deadline", "", "the job's deadline, RFC 3339 (2026-12-03T06:00:00Z) or a duration from now (6h): needed by\n"+
			"--service-tier auto; flex requests Gemini sheds are retried until it"),
	}
}

// params returns the tier settings as ingest's query parameters.
func (t tierFlags) params(now time.Time) (tier, deadline string, err error) {
	d := *t.deadline
	if dur, perr := time.ParseDuration(d); perr == nil {
		if dur <= 0 {
			return "", "", &exitError{code: exitUsage, msg: "--deadline must be in the future"}
		}
		d = now.Add(dur).UTC().Format(time.RFC3339)
	}
	return *t.tier, d, nil
}

// jobTier is the "service_tier" of a job's status.
type jobTier struct {
	Tier       string     `json:"tier"`
	Asked      string     `json:"asked,omitempty"`
	Reason     string     `json:"reason,omitempty"`
	Deadline   *time.Time `json:"deadline,omitempty"`
	Downgraded int64      `json:"downgraded,omitempty"`
}

// printTierAndCost prints the job's tier and its cost lines of gemq status.
func printTierAndCost(w io.Writer, st jobStatus) {
	if t := st.ServiceTier; t != nil {
		line := t.Tier
		if t.Asked != "" {
			line = fmt.Sprintf("%s (asked %s: %s)", t.Tier, t.Asked, t.Reason)
		}
		if t.Deadline != nil {
			line += ", deadline " + t.Deadline.Local().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "tier      %s\n", line)
		if t.Downgraded > 0 {
			fmt.Fprintf(w, "          %d task(s) served at another tier than asked (see service_tier_downgrade in the results)\n", t.Downgraded)
		}
	}
	c := st.Cost
	if c == nil {
		return
	}
	for _, name := range slices.Sorted(maps.Keys(c.Tiers)) {
		u := c.Tiers[name]
		fmt.Fprintf(w, "tokens    %s: %d task(s), %d input (%d cached), %d output, %d thinking\n",
			name, u.Tasks, u.InputTokens, u.CachedTokens, u.OutputTokens, u.Thinking)
	}
	if len(c.AtTier) > 0 {
		fmt.Fprintf(w, "cost      ~$%.4f (estimate; %s)\n", c.EstimatedUSD, c.Note)
	}
}

// printCostSummary prints the run summary's cost lines: the job's cost at
// each tier and what flex or batch would have saved.
func printCostSummary(w io.Writer, st jobStatus) {
	if t := st.ServiceTier; t != nil {
		line := t.Tier
		if t.Asked != "" {
			line += " (chosen by " + t.Asked + ")"
		}
		if t.Downgraded > 0 {
			line += fmt.Sprintf("; %d task(s) served at another tier", t.Downgraded)
		}
		fmt.Fprintf(w, "  service tier          %s\n", line)
	}
	c := st.Cost
	if c == nil || len(c.AtTier) == 0 {
		return
	}
	fmt.Fprintf(w, "  estimated cost        $%.4f as run", c.EstimatedUSD)
	for _, t := range []string{"standard", "flex", "batch", "priority"} {
		fmt.Fprintf(w, "; %s $%.4f", t, c.AtTier[t])
	}
	fmt.Fprintln(w)
	if save := c.EstimatedUSD - c.AtTier["flex"]; save > 0 {
		fmt.Fprintf(w, "                        flex or batch would have saved $%.4f (%.0f%%) on this job\n", save, 100*save/c.EstimatedUSD)
	}
}
