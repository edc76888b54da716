package config

import (
	"strings"
	"testing"
	"time"
)

// TestTestCalendarOffset: a normal build ignores the variable whatever it
// says; a build with the tag gemqtestclock (go test -tags gemqtestclock)
// reads it and names it when it is unreadable.
func TestTestCalendarOffset(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == EnvTestCalendarOffset {
				return v
			}
			return ""
		}
	}
	got, err := TestCalendarOffset(env("2160h30m"))
	want := time.Duration(0)
	if testClockBuild {
		want = 2160*time.Hour + 30*time.Minute
	}
	if err != nil || got != want {
		t.Fatalf("TestCalendarOffset(2160h30m) = %v, %v; want %v, nil (hook compiled in: %v)", got, err, want, testClockBuild)
	}
	if got, err := TestCalendarOffset(env("")); got != 0 || err != nil {
		t.Fatalf("TestCalendarOffset(unset) = %v, %v; want 0, nil", got, err)
	}
	_, err = TestCalendarOffset(env("soon"))
	if testClockBuild != (err != nil) {
		t.Fatalf("TestCalendarOffset(soon): error %v; want one only when the hook is compiled in (%v)", err, testClockBuild)
	}
	if err != nil && !strings.Contains(err.Error(), EnvTestCalendarOffset) {
		t.Fatalf("error %q does not name %s", err, EnvTestCalendarOffset)
	}
}
