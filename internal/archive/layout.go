package archive

import (
	"fmt"
	"strings"
	"time"
)

// Layout says where the results subscription writes: the Cloud Storage
// subscription's filename_prefix, filename_datetime_format and
// max_duration (terraform/pubsub.tf). An object is named
// Prefix + FormatDatetime(DatetimeFormat, the time its batch started) +
// "_" + a UUID + the suffix, and holds the messages received from that time
// until at most MaxDuration later
// (https://cloud.google.com/pubsub/docs/create-cloudstorage-subscription#file_names).
type Layout struct {
	Prefix         string
	DatetimeFormat string
	MaxDuration    time.Duration
}

// skew is allowed between the clock that stamps a job (Redis TIME) and
// the one that names the subscription's objects (Google's).
const skew = time.Minute

// datetimeTokens are the fields of a filename_datetime_format, longest
// first so that "YYYY" is not read as "YY" twice.
var datetimeTokens = []struct {
	tok    string
	format func(time.Time) string
}{
	{"YYYY", func(t time.Time) string { return fmt.Sprintf("%04d", t.Year()) }},
	{"YY", func(t time.Time) string { return fmt.Sprintf("%02d", t.Year()%100) }},
	{"MM", func(t time.Time) string { return fmt.Sprintf("%02d", int(t.Month())) }},
	{"DD", func(t time.Time) string { return fmt.Sprintf("%02d", t.Day()) }},
	{"hh", func(t time.Time) string { return fmt.Sprintf("%02d", t.Hour()) }},
	{"mm", func(t time.Time) string { return fmt.Sprintf("%02d", t.Minute()) }},
	{"ss", func(t time.Time) string { return fmt.Sprintf("%02d", t.Second()) }},
}

// FormatDatetime renders t (in UTC) with a filename_datetime_format:
// YYYY, YY, MM, DD, hh, mm and ss are replaced by the year, two-digit
// year, month, day, hour, minute and second; every other character (the
// separators, a trailing Z) is kept.
func FormatDatetime(format string, t time.Time) string {
	t = t.UTC()
	var b strings.Builder
	for i := 0; i < len(format); {
		matched := false
		for _, d := range datetimeTokens {
			if strings.HasPrefix(format[i:], d.tok) {
				b.WriteString(d.format(t))
				i += len(d.tok)
				matched = true
				break
			}
		}
		if !matched {
			b.WriteByte(format[i])
			i++
		}
	}
	return b.String()
}

// sortable reports whether names made with format sort as their times do:
// the fields appear from year to second, each once, with four-digit years.
func sortable(format string) bool {
	want := []string{"YYYY", "MM", "DD", "hh", "mm", "ss"}
	var got []string
	for i := 0; i < len(format); {
		matched := false
		for _, d := range datetimeTokens {
			if strings.HasPrefix(format[i:], d.tok) {
				got = append(got, d.tok)
				i += len(d.tok)
				matched = true
				break
			}
		}
		if !matched {
			i++
		}
	}
	if len(got) != len(want) {
		return false
	}
	for i := range want {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// StartOffset is the first object name that can hold a result published at
// or after since: objects are named after the start of their batch, which
// is at most MaxDuration (plus clock skew) before any message in it. It is
// Prefix alone when the datetime format does not sort by time.
func (l Layout) StartOffset(since time.Time) string {
	if since.IsZero() || !sortable(l.DatetimeFormat) {
		return l.Prefix
	}
	return l.Prefix + FormatDatetime(l.DatetimeFormat, since.Add(-l.MaxDuration-skew))
}
