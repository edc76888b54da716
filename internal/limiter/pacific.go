package limiter

import (
	"time"
	_ "time/tzdata" // the Pacific day must not depend on the host's zoneinfo
)

// pacific is America/Los_Angeles, where Gemini's daily quotas reset.
var pacific = mustLoadPacific()

func mustLoadPacific() *time.Location {
	loc, err := time.LoadLocation("America/Los_Angeles")
	if err != nil {
		// Unreachable: time/tzdata embeds the zone. Fall back to a fixed
		// offset rather than panicking at init.
		return time.FixedZone("PST", -8*3600)
	}
	return loc
}

// PacificDayStart returns the start (local midnight in America/Los_Angeles) of
// the Pacific calendar day containing t, shifted by offset days. Days are 23,
// 24 or 25 hours long across daylight-saving switches.
func PacificDayStart(t time.Time, offset int) time.Time {
	p := t.In(pacific)
	return time.Date(p.Year(), p.Month(), p.Day()+offset, 0, 0, 0, 0, pacific)
}
