package task

import (
	"encoding/json"
	"testing"
)

// The fingerprint is the same for every copy the system makes of an
// envelope (Encode compacts the request and escapes HTML characters), and
// differs for another request or model.
func TestRequestFingerprint(t *testing.T) {
	e := Envelope{V: Version, JobID: "job-fp", Key: "k", Model: "gemini-2.5-flash",
		Request: json.RawMessage("{ \"contents\": [ {\"role\":\"user\", \"parts\":[{\"text\":\"a <b> & c\"}]} ] }")}
	data, err := Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if string(again.Request) == string(e.Request) {
		t.Fatalf("re-encoding left the request as it was: the test shows nothing")
	}
	fp := RequestFingerprint(e.Model, e.Request)
	if got := RequestFingerprint(again.Model, again.Request); got != fp || len(fp) != 32 {
		t.Errorf("fingerprint %s, after re-encoding %s; want equal, 32 hex digits", fp, got)
	}
	for _, o := range []struct{ model, req string }{
		{e.Model, `{"contents":[{"role":"user","parts":[{"text":"a <b> & d"}]}]}`},
		{"gemini-2.5-pro", string(e.Request)},
	} {
		if RequestFingerprint(o.model, json.RawMessage(o.req)) == fp {
			t.Errorf("%s %s has the same fingerprint", o.model, o.req)
		}
	}
}
