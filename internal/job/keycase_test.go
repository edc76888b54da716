package job

import (
	"errors"
	"strings"
	"testing"

	"github.com/gemq-dev/gemq/internal/gemini"
	"github.com/gemq-dev/gemq/internal/task"
)

// TestKeyCaseRuleOnBothPaths checks the one rule for keys, on ingest's path
// (Build: the body's scan, then gemini.ParseRequest) and on the worker's
// (gemini.ParseRequest and Validate of a decoded envelope's request, as
// internal/lifecycle runs them): a key matching a struct field only up to
// case is an unknown field; keys inside free-form values (schema
// properties, function arguments) are data, distinct when they differ in
// case and duplicates only when equal.
func TestKeyCaseRuleOnBothPaths(t *testing.T) {
	const text = `"contents":[{"parts":[{"text":"hi"}]}]`
	for _, tc := range []struct {
		name    string
		request string
		field   string // "" for accepted; else relative to "request"
		msg     string
	}{
		{name: "schema properties differing in case", request: `{` + text + `,"generationConfig":{"responseMimeType":"application/json","responseJsonSchema":{"type":"object","properties":{"URL":{"type":"string"},"url":{"type":"string"}}}}}`},
		{name: "typed schema properties differing in case", request: `{` + text + `,"generationConfig":{"responseMimeType":"application/json","responseSchema":{"type":"OBJECT","properties":{"URL":{"type":"STRING"},"url":{"type":"STRING"}}}}}`},
		{name: "function arguments differing in case", request: `{"contents":[{"role":"model","parts":[{"functionCall":{"name":"f","args":{"a":1,"A":{"b":1,"B":2}}}}]}]}`},
		{name: "tool schema properties differing in case", request: `{` + text + `,"tools":[{"functionDeclarations":[{"name":"f","parametersJsonSchema":{"properties":{"Id":{},"ID":{}}}}]}]}`},
		{name: "case variant of a field", request: `{` + text + `,"Contents":[]}`, field: "Contents", msg: `unknown field "Contents" (field names are case-sensitive: did you mean "contents"?)`},
		{name: "case variant of a nested field", request: `{"contents":[{"parts":[{"text":"x","TEXT":"y"}]}]}`, field: "contents[0].parts[0].TEXT", msg: `unknown field "TEXT"`},
		{name: "case variant in a typed schema", request: `{` + text + `,"generationConfig":{"responseMimeType":"application/json","responseSchema":{"type":"OBJECT","Type":"STRING"}}}`, field: "generationConfig.responseSchema.Type", msg: `unknown field "Type"`},
		{name: "equal schema properties", request: `{` + text + `,"generationConfig":{"responseMimeType":"application/json","responseJsonSchema":{"properties":{"url":{},"url":{}}}}}`, field: "generationConfig.responseJsonSchema.properties.url", msg: `duplicate key "url"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Ingest.
			j, err := rules().Build(t.Context(), JSON, []byte(`{"model":"`+testModel+`","requests":[{"key":"a","request":`+tc.request+`}]}`), Params{})
			var je *Error
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("ingest refused: %v", err)
			case tc.field != "" && (!errors.As(err, &je) || je.Field != "requests[0].request."+tc.field || !strings.Contains(je.Message, tc.msg)):
				t.Errorf("ingest: %v, want field requests[0].request.%s with %q", err, tc.field, tc.msg)
			}
			// Worker: the envelope ingest published, or (for what ingest
			// refuses) one published straight to the topic.
			data := []byte(nil)
			if j != nil {
				data = j.Tasks[0].Data
			} else if data, err = task.Encode(task.Envelope{V: task.Version, JobID: "j", Key: "a", Model: testModel, Request: []byte(tc.request)}); err != nil {
				t.Fatal(err)
			}
			env, err := task.Decode(data)
			if err != nil {
				t.Fatal(err)
			}
			req, err := gemini.ParseRequest(env.Request)
			if err == nil {
				err = req.Validate()
			}
			var fe *gemini.FieldError
			switch {
			case tc.field == "" && err != nil:
				t.Errorf("worker refused: %v", err)
			case tc.field != "" && (!errors.As(err, &fe) || fe.Field != "request."+tc.field || !strings.Contains(fe.Message, tc.msg)):
				t.Errorf("worker: %v, want field request.%s with %q", err, tc.field, tc.msg)
			}
		})
	}
}
