package task

import (
	"bytes"
	"encoding/json"
	"testing"
)

var canonicalSeeds = []string{
	`{}`,
	` { "a" : [ 1 , 2.5e3, -0 ] , "b" : { } } `,
	"{\"text\":\"a <b> & c\\u003c \\\" \\\\ \u2028 \u2029 \u00e9 \u65e5\"}",
	"{\"k\":\"tab\\t nl\\n quote\\\" slash\\\\\", \"n\":null,\"t\":true,\"f\":false}",
	"{\n\t\"contents\": [{\"role\": \"user\", \"parts\": [{\"text\": \"} ] { [ \\\" \"}]}]\r\n}",
	`{"a":"\\"}`,
	`{"nested":[[[{"x":[{}]}]]]}`,
}

// appendCanonical writes what json.Marshal writes for a RawMessage, for any
// JSON text.
func FuzzCanonical(f *testing.F) {
	for _, s := range canonicalSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		if !json.Valid(src) {
			return
		}
		want, err := json.Marshal(json.RawMessage(src))
		if err != nil {
			t.Fatal(err)
		}
		got, err := appendCanonical([]byte("prefix"), src)
		if err != nil || !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Fatalf("appendCanonical(%q) = %q, %v; json.Marshal %q", src, got, err, want)
		}
	})
}

func TestCanonicalRefusesOpenText(t *testing.T) {
	for _, s := range []string{`{"a":"b}`, `{"a":[1,2}`, `{"a":1}}`, `{"a":"\"}`, `[`} {
		if _, err := appendCanonical(nil, []byte(s)); err == nil {
			t.Errorf("appendCanonical(%s) accepted it", s)
		}
	}
}

// Encode's marshal is json.Marshal of the envelope byte for byte (the job
// hash is over these bytes, so a retry after an upgrade finds the same
// hash), whatever the strings before the request hold.
func TestMarshalIsJSONMarshal(t *testing.T) {
	for i, e := range []Envelope{
		{V: Version, JobID: "j", Key: "k <&>", Model: "gemini-2.5-flash", Request: json.RawMessage(canonicalSeeds[2]), TaskID: TaskID("j", "k <&>")},
		{V: Version, Key: "\u2028", Model: "m", Request: json.RawMessage(canonicalSeeds[1])},
		{V: Version, JobID: "j", Key: `"request":0 x","request":0,"`, Model: "m", Request: json.RawMessage(`{"request":0}`)},
		{V: Version, JobID: "j2", Key: "k", Model: "m", Request: json.RawMessage(canonicalSeeds[4]), TaskID: "t", Attempt: 2, Deferrals: 3,
			Permit: json.RawMessage(` {"id" : "p<1>"} `), JobHash: "abc", JobTotal: 7, JobCreated: "2026-12-03T10:00:00.000Z", ServiceTier: "auto", Deadline: "2026-12-04T00:00:00Z"},
	} {
		want, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := e.marshal()
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("envelope %d: marshal = %s, %v\njson.Marshal %s", i, got, err, want)
		}
	}
}
