package task

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const okReq = `{"contents":[{"parts":[{"text":"hi"}]}]}`

func TestDecodeValid(t *testing.T) {
	id := TaskID("job-1", "k 1 {weird}")
	msg := `{"v":1,"job_id":"job-1","key":"k 1 {weird}","model":"gemini-2.5-flash","request":` + okReq +
		`,"task_id":"` + id + `","attempt":2,"deferrals":3,"permit":{"id":"p1"}}`
	got, err := Decode([]byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	want := Envelope{V: 1, JobID: "job-1", Key: "k 1 {weird}", Model: "gemini-2.5-flash", Request: json.RawMessage(okReq),
		TaskID: id, Attempt: 2, Deferrals: 3, Permit: json.RawMessage(`{"id":"p1"}`)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Decode (-want +got):\n%s", diff)
	}
	// Round trip.
	data, err := Encode(got)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, again); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestDecodeDerivesJobID(t *testing.T) {
	msg := `{"v":1,"key":"a","model":"gemini-2.5-flash","request":` + okReq + `}`
	e1, err := Decode([]byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	e2, err := Decode([]byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(e1.JobID, AdhocPrefix) || !ValidJobID(e1.JobID) || e1.JobID != e2.JobID {
		t.Errorf("derived job ids %q, %q: want equal, valid, prefixed %q", e1.JobID, e2.JobID, AdhocPrefix)
	}
	if e1.TaskID != TaskID(e1.JobID, "a") {
		t.Errorf("task id %q, want TaskID(job, key)", e1.TaskID)
	}
	other, err := Decode([]byte(strings.Replace(msg, `"hi"`, `"bye"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if other.JobID == e1.JobID {
		t.Errorf("different requests got the same derived job id %q", e1.JobID)
	}
}

func TestDecodeInvalid(t *testing.T) {
	base := func(repl ...string) string {
		s := `{"v":1,"job_id":"j","key":"k","model":"gemini-2.5-flash","request":` + okReq + `}`
		for i := 0; i < len(repl); i += 2 {
			s = strings.Replace(s, repl[i], repl[i+1], 1)
		}
		return s
	}
	big := `{"v":1,"job_id":"j","key":"k","model":"m","request":{"x":"` + strings.Repeat("a", MaxEnvelopeBytes) + `"}}`
	tests := []struct {
		name, msg, field string
	}{
		{"not json", `nope`, ""},
		{"array", `[]`, ""},
		{"trailing data", base() + `{}`, ""},
		{"truncated", base()[:20], ""},
		{"invalid utf8", base(`"k"`, "\"k\xff\""), ""},
		{"unknown field", base(`"v":1`, `"v":1,"extra":true`), "extra"},
		{"case variant", base(`"job_id"`, `"Job_ID"`), "Job_ID"},
		{"duplicate", base(`"v":1`, `"v":1,"key":"other"`), "key"},
		{"no version", base(`"v":1,`, ``), "v"},
		{"version 2", base(`"v":1`, `"v":2`), "v"},
		{"version string", base(`"v":1`, `"v":"1"`), "v"},
		{"bad job id", base(`"j"`, `"a{b}"`), "job_id"},
		{"long job id", base(`"j"`, `"`+strings.Repeat("j", 65)+`"`), "job_id"},
		{"empty key", base(`"k"`, `""`), "key"},
		{"long key", base(`"k"`, `"`+strings.Repeat("k", MaxKeyBytes+1)+`"`), "key"},
		{"no model", base(`"model":"gemini-2.5-flash",`, ``), "model"},
		{"model path", base(`"gemini-2.5-flash"`, `"models/gemini-2.5-flash"`), "model"},
		{"no request", base(`,"request":`+okReq, ``), "request"},
		{"null request", base(okReq, `null`), "request"},
		{"request not object", base(okReq, `"text"`), "request"},
		{"wrong task id", base(`"v":1`, `"v":1,"task_id":"`+TaskID("j", "other")+`"`), "task_id"},
		{"negative attempt", base(`"v":1`, `"v":1,"attempt":-1`), "attempt"},
		{"huge deferrals", base(`"v":1`, `"v":1,"deferrals":1001`), "deferrals"},
		{"permit not object", base(`"v":1`, `"v":1,"permit":[1]`), "permit"},
		{"too large", big, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.msg))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Decode error = %v, want *ValidationError", err)
			}
			if ve.Field != tt.field {
				t.Errorf("field = %q, want %q (%v)", ve.Field, tt.field, err)
			}
		})
	}
}

func TestTooLarge(t *testing.T) {
	e := Envelope{V: 1, JobID: "j", Key: "k", Model: "m",
		Request: json.RawMessage(`{"x":"` + strings.Repeat("a", MaxPublishBytes) + `"}`)}
	data, err := Encode(e)
	if err != nil {
		t.Fatalf("Encode: %v (an envelope under MaxEnvelopeBytes must encode)", err)
	}
	if err := CheckPublishSize(data); !errors.Is(err, ErrTooLarge) {
		t.Errorf("CheckPublishSize(%d bytes) = %v, want ErrTooLarge", len(data), err)
	}
	e.Request = json.RawMessage(`{"x":"` + strings.Repeat("a", MaxEnvelopeBytes) + `"}`)
	if _, err := Encode(e); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Encode over the cap = %v, want ErrTooLarge", err)
	}
	if _, err := Decode([]byte(`{"x":"` + strings.Repeat("a", MaxEnvelopeBytes) + `"}`)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Decode over the cap = %v, want ErrTooLarge", err)
	}
}

func TestIDs(t *testing.T) {
	if TaskID("a", "b") == TaskID("a\x00b", "") || TaskID("ab", "") == TaskID("a", "b") {
		t.Error("TaskID is ambiguous across the job/key boundary")
	}
	if id := TaskID("j", "any key ✓ {}:\n"); !ValidTaskID(id) {
		t.Errorf("TaskID = %q, not ValidTaskID", id)
	}
	for _, s := range []string{"a", "A-z_09", strings.Repeat("x", 64)} {
		if !ValidJobID(s) {
			t.Errorf("ValidJobID(%q) = false", s)
		}
	}
	for _, s := range []string{"", "a b", "a{b", "a}b", "a:b", "a.b", "é", strings.Repeat("x", 65)} {
		if ValidJobID(s) {
			t.Errorf("ValidJobID(%q) = true", s)
		}
	}
	if !ValidModel("gemini-2.5-flash-001") || ValidModel("models/x") || ValidModel("") {
		t.Error("ValidModel")
	}
}

func TestDecodeServiceTier(t *testing.T) {
	base := `{"v":1,"key":"k","model":"m","request":{}`
	for _, tc := range []struct {
		extra, field string
	}{
		{`,"service_tier":"flex"}`, ""},
		{`,"service_tier":"auto","deadline":"2026-12-03T06:00:00Z"}`, ""},
		{`,"service_tier":"auto"}`, "deadline"},
		{`,"service_tier":"batch"}`, ""},
		{`,"service_tier":"batched"}`, "service_tier"},
		{`,"service_tier":"FLEX"}`, "service_tier"},
		{`,"deadline":"soon"}`, "deadline"},
	} {
		e, err := Decode([]byte(base + tc.extra))
		var ve *ValidationError
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%s: %v", tc.extra, err)
		case tc.field != "" && (!errors.As(err, &ve) || ve.Field != tc.field):
			t.Errorf("%s: err = %v, want one on %s", tc.extra, err, tc.field)
		case tc.field == "" && e.ServiceTier == "":
			t.Errorf("%s: tier lost", tc.extra)
		}
	}
}

// job_created rides with job_hash: WithCreated writes it at a fixed size,
// Decode reads it back to the millisecond, and refuses it without job_hash,
// unparsable, or outside the years 2000 to 9999.
func TestJobCreated(t *testing.T) {
	data, err := Encode(Envelope{V: 1, JobID: "j", Key: "k", Model: "m", Request: json.RawMessage(okReq)})
	if err != nil {
		t.Fatal(err)
	}
	withJob := WithJob(data, "h", 3)
	created := time.Date(2026, 12, 3, 4, 8, 38, 123456789, time.FixedZone("x", 3600))
	stamped := WithCreated(withJob, created)
	if len(stamped) != len(withJob)+JobCreatedBytes {
		t.Errorf("WithCreated added %d bytes, want JobCreatedBytes = %d", len(stamped)-len(withJob), JobCreatedBytes)
	}
	e, err := Decode(stamped)
	if err != nil {
		t.Fatal(err)
	}
	if want := created.Truncate(time.Millisecond); !e.JobCreatedTime().Equal(want) || e.JobHash != "h" || e.JobTotal != 3 {
		t.Errorf("decoded job_created %v (hash %q, total %d), want %v with h, 3", e.JobCreatedTime(), e.JobHash, e.JobTotal, want)
	}
	again, err := Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	if e2, err := Decode(again); err != nil || e2.JobCreated != e.JobCreated {
		t.Errorf("re-encoded job_created = %q, %v; want %q (a deferral keeps it)", e2.JobCreated, err, e.JobCreated)
	}
	if (&Envelope{}).JobCreatedTime() != (time.Time{}) {
		t.Error("JobCreatedTime of an envelope without it is not zero")
	}
	base := strings.TrimSuffix(string(withJob), "}")
	for _, tc := range []struct{ name, msg string }{
		{"without job_hash", strings.TrimSuffix(string(data), "}") + `,"job_created":"2026-12-03T04:08:38.123Z"}`},
		{"not a time", base + `,"job_created":"yesterday"}`},
		{"before 2000", base + `,"job_created":"1999-12-31T23:59:59Z"}`},
		{"a number", base + `,"job_created":1764734918123}`},
		{"too long", base + `,"job_created":"2026-12-03T04:08:38.` + strings.Repeat("1", 60) + `Z"}`},
	} {
		_, err := Decode([]byte(tc.msg))
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field != "job_created" {
			t.Errorf("%s: err = %v, want one on job_created", tc.name, err)
		}
	}
}

// WithJob and WithCreated append their fields before the envelope's one
// closing brace, also when its last field is an object that ends with
// braces of its own (and after trailing space).
func TestFieldsAppendedBeforeTheClosingBrace(t *testing.T) {
	data := []byte(`{"v":1,"job_id":"j","key":"k","model":"m","request":{"contents":[{"parts":[{"text":"hi"}]}]}}` + " \n")
	out := WithCreated(WithJob(data, "h", 3), time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC))
	var m map[string]json.RawMessage
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	if string(m["request"]) != okReq || string(m["job_hash"]) != `"h"` || string(m["job_total"]) != "3" ||
		string(m["job_created"]) != `"2026-12-03T00:00:00.000Z"` {
		t.Errorf("fields = %v", m)
	}
}
