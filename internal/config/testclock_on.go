//go:build gemqtestclock

package config

import (
	"fmt"
	"time"
)

// testClockBuild reports whether the test clock hook is compiled in.
const testClockBuild = true

// testCalendarOffset reads EnvTestCalendarOffset (a test binary only).
func testCalendarOffset(getenv func(string) string) (time.Duration, error) {
	v := getenv(EnvTestCalendarOffset)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: not a Go duration: %w", EnvTestCalendarOffset, v, err)
	}
	return d, nil
}
