package config

import "time"

// EnvTestCalendarOffset is the test clock hook's variable: a Go duration by
// which the worker's limiter shifts the Pacific calendar it reads (the day
// boundaries of daily quotas), so that a fault-injection run can put a
// Pacific midnight, or the end of a 23- or 25-hour day, inside a job.
//
// The hook is off by default and cannot be switched on by configuration: a
// normal build ignores the variable (TestCalendarOffset always returns 0);
// only a binary built with the build tag gemqtestclock reads it — the chaos
// harness builds infra/cmd/gemqworker that way, and nothing that deploys
// gemq passes that tag. It shifts only the calendar: "now" stays Redis TIME
// in every script (no instance ever trusts a client's clock), and Cloud
// Tasks, leases and back-offs keep real time, which is why nothing else
// needs to move (see infra/chaos: the Gemini stand-in is started at the
// same shifted instant).
const EnvTestCalendarOffset = "GEMQ_TEST_CALENDAR_OFFSET"

// TestCalendarOffset returns the test clock hook's calendar offset: 0 unless
// the binary was built with the tag gemqtestclock and the variable is set.
// An unreadable value is an error naming the variable.
func TestCalendarOffset(getenv func(string) string) (time.Duration, error) {
	return testCalendarOffset(getenv)
}
