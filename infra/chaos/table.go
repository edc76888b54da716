package chaos

import (
	"fmt"
	"strings"
	"time"
)

// Table renders reports as the Markdown table RELIABILITY.md holds: one
// row per scenario, the measured numbers, PASS or FAIL and why.
func Table(reports []Report) string {
	var b strings.Builder
	b.WriteString("| scenario | fault | tasks | lost | >1 result | dead-lettered | dup Gemini calls (in flight at kill) | windows over | slowest delay beyond slot (allowed) | job status (API) | truth (results topic) | verdict |\n")
	b.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |\n")
	for _, r := range reports {
		verdict := "PASS"
		if f := r.Failures(); len(f) > 0 {
			verdict = "FAIL: " + strings.Join(f, "; ")
		}
		fault := r.Fault
		if r.Note != "" {
			fault += " (" + r.Note + ")"
		}
		windows := fmt.Sprint(r.WindowsOver)
		if r.WindowsOver > 0 {
			windows += " (" + r.WindowsPeak + ")"
		}
		allowed := secs(r.Allowed)
		if r.LostAtKill > 0 {
			allowed += fmt.Sprintf("; %d slot(s) lost at a kill", r.LostAtKill)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d | %d (%d) | %s | %s (%s) | %s | %s | %s |\n",
			r.Name, fault, r.Tasks, r.Lost, r.TwoResults, r.DeadLettered, r.DupCalls, r.DupInFlight, windows,
			secs(r.Delay), allowed, r.JobStatus, r.Truth, strings.ReplaceAll(verdict, "|", "/"))
	}
	return b.String()
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
