//go:build !gemqtestclock

package config

import "time"

// testClockBuild reports whether the test clock hook is compiled in.
const testClockBuild = false

// testCalendarOffset: the hook is not compiled in; the variable is ignored.
func testCalendarOffset(func(string) string) (time.Duration, error) { return 0, nil }
