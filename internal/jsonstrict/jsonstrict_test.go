package jsonstrict

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type part struct {
	Text       string          `json:"text,omitempty"`
	InlineData *blob           `json:"inlineData,omitempty"`
	Raw        json.RawMessage `json:"raw,omitempty"`
}

type blob struct {
	MimeType string `json:"mimeType"`
	Data     []byte `json:"data"`
}

type content struct {
	Role  string `json:"role,omitempty"`
	Parts []part `json:"parts"`
}

type genConfig struct {
	Temperature     *float64 `json:"temperature,omitempty"`
	MaxOutputTokens *int32   `json:"maxOutputTokens,omitempty"`
	CandidateCount  uint8    `json:"candidateCount,omitempty"`
	Stop            []string `json:"stopSequences,omitempty"`
	Seed            int64    `json:"seed,string,omitempty"`
}

type request struct {
	Contents []content         `json:"contents"`
	Config   *genConfig        `json:"generationConfig,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Any      any               `json:"any,omitempty"`
	Ignored  string            `json:"-"`
}

type line struct {
	Key     string  `json:"key"`
	Request request `json:"request"`
}

type job struct {
	JobID    string `json:"job_id"`
	Model    string `json:"model"`
	Requests []line `json:"requests"`
	inner
}

type inner struct {
	Extra string `json:"extra,omitempty"`
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		lim  Limits
		kind Kind
		path string
		msg  string // substring of Msg
	}{
		{"empty", ``, Limits{}, Syntax, "", "empty input"},
		{"only space", " \n\t ", Limits{}, Syntax, "", "empty input"},
		{"truncated", `{"model": "m", "requests": [`, Limits{}, Syntax, "requests[0]", "unexpected end"},
		{"missing colon", `{"model" "m"}`, Limits{}, Syntax, "", "':'"},
		{"bare word", `{"model": m}`, Limits{}, Syntax, "model", "expected a value"},
		{"single quotes", `{'model': 1}`, Limits{}, Syntax, "", "string key"},
		{"trailing comma", `{"model": "m",}`, Limits{}, Syntax, "", "string key"},
		{"trailing comma array", `{"requests": [{"key": "a"},]}`, Limits{}, Syntax, "requests[1]", "expected a value"},
		{"leading zero", `{"requests": [{"request": {"generationConfig": {"candidateCount": 01}}}]}`, Limits{}, Syntax, "requests[0].request.generationConfig", "',' or '}'"},
		{"control char", "{\"model\": \"a\x01b\"}", Limits{}, Syntax, "model", "control character"},
		{"bad escape", `{"model": "a\qb"}`, Limits{}, Syntax, "model", `invalid escape sequence \q`},
		{"bad unicode escape", `{"model": "\u12G4"}`, Limits{}, Syntax, "model", `invalid \u escape`},
		{"trailing data", `{"model": "m"} {"model": "n"}`, Limits{}, Trailing, "", "after the JSON value"},
		{"trailing garbage", `{"model": "m"}x`, Limits{}, Trailing, "", "character 'x'"},
		{"bom", "\xEF\xBB\xBF{}", Limits{}, Syntax, "", "byte order mark"},
		{"unknown top", `{"model": "m", "modle": "x"}`, Limits{}, UnknownField, "modle", `unknown field "modle"`},
		{"unknown deep", `{"requests": [{"key": "a", "request": {"contents": [{"parts": [{"txt": "hi"}]}]}}]}`, Limits{}, UnknownField, "requests[0].request.contents[0].parts[0].txt", `unknown field "txt"`},
		{"case variant is unknown", `{"Model": "m"}`, Limits{}, UnknownField, "Model", `did you mean "model"`},
		{"ignored field is unknown", `{"requests": [{"request": {"Ignored": "x"}}]}`, Limits{}, UnknownField, "requests[0].request.Ignored", "unknown field"},
		{"duplicate top", `{"model": "a", "model": "b"}`, Limits{}, DuplicateKey, "model", `duplicate key "model"`},
		{"duplicate deep", `{"requests": [{"key": "a"}, {"key": "b", "request": {"contents": [], "contents": []}}]}`, Limits{}, DuplicateKey, "requests[1].request.contents", "duplicate key"},
		{"case variant of a field", `{"model": "a", "MODEL": "b"}`, Limits{}, UnknownField, "MODEL", `unknown field "MODEL" (field names are case-sensitive: did you mean "model"?)`},
		{"case variant of a field first", `{"MODEL": "b", "model": "a"}`, Limits{}, UnknownField, "MODEL", `did you mean "model"?`},
		{"kelvin fold", "{\"requests\": [{\"key\": \"a\", \"\u212aey\": \"b\"}]}", Limits{}, UnknownField, "requests[0][\"\u212aey\"]", `did you mean "key"?`},
		{"exact duplicate in raw", `{"requests": [{"request": {"contents": [{"parts": [{"raw": {"a": 1, "a": 2}}]}]}}]}`, Limits{}, DuplicateKey, "requests[0].request.contents[0].parts[0].raw.a", `duplicate key "a"`},
		{"exact duplicate in map", `{"requests": [{"request": {"labels": {"a": "1", "a": "2"}}}]}`, Limits{}, DuplicateKey, "requests[0].request.labels.a", `duplicate key "a"`},
		{"escaped duplicate", `{"model": "a", "mod\u0065l": "b"}`, Limits{}, DuplicateKey, "model", `duplicate key "model"`},
		{"invalid utf8 value", "{\"model\": \"a\xffb\"}", Limits{}, InvalidUTF8, "model", "invalid UTF-8 byte 0xff"},
		{"invalid utf8 deep", "{\"requests\": [{\"key\": \"k\", \"request\": {\"contents\": [{\"parts\": [{\"text\": \"\xc3\x28\"}]}]}}]}", Limits{}, InvalidUTF8, "requests[0].request.contents[0].parts[0].text", "invalid UTF-8"},
		{"invalid utf8 key", "{\"requests\": [{\"k\xe2\x82\": 1}]}", Limits{}, InvalidUTF8, "requests[0]", "invalid UTF-8"},
		{"utf8 surrogate bytes", "{\"model\": \"\xed\xa0\x80\"}", Limits{}, InvalidUTF8, "model", "invalid UTF-8"},
		{"overlong utf8", "{\"model\": \"\xc0\xaf\"}", Limits{}, InvalidUTF8, "model", "invalid UTF-8"},
		{"lone high surrogate", `{"model": "\ud800"}`, Limits{}, InvalidUTF8, "model", "lone UTF-16 surrogate"},
		{"lone low surrogate", `{"model": "\udc00x"}`, Limits{}, InvalidUTF8, "model", "lone UTF-16 surrogate"},
		{"reversed surrogates", `{"model": "\udc00\ud800"}`, Limits{}, InvalidUTF8, "model", "lone UTF-16 surrogate"},
		{"high then non-low", `{"model": "\ud800\u0041"}`, Limits{}, InvalidUTF8, "model", "lone UTF-16 surrogate"},
		{"string for int", `{"requests": [{"request": {"generationConfig": {"maxOutputTokens": "5"}}}]}`, Limits{}, Type, "requests[0].request.generationConfig.maxOutputTokens", "expected an integer (int32), got a string"},
		{"fraction for int", `{"requests": [{"request": {"generationConfig": {"maxOutputTokens": 1.5}}}]}`, Limits{}, Type, "requests[0].request.generationConfig.maxOutputTokens", "does not fit"},
		{"int overflow", `{"requests": [{"request": {"generationConfig": {"maxOutputTokens": 3000000000}}}]}`, Limits{}, Type, "requests[0].request.generationConfig.maxOutputTokens", "does not fit"},
		{"negative uint", `{"requests": [{"request": {"generationConfig": {"candidateCount": -1}}}]}`, Limits{}, Type, "requests[0].request.generationConfig.candidateCount", "does not fit"},
		{"float overflow", `{"requests": [{"request": {"generationConfig": {"temperature": 1e400}}}]}`, Limits{}, Type, "requests[0].request.generationConfig.temperature", "does not fit"},
		{"number for string", `{"model": 5}`, Limits{}, Type, "model", "expected a string, got a number"},
		{"object for array", `{"requests": {}}`, Limits{}, Type, "requests", "expected an array, got an object"},
		{"array for object", `{"requests": [[]]}`, Limits{}, Type, "requests[0]", "expected an object, got an array"},
		{"bool for string", `{"model": true}`, Limits{}, Type, "model", "got a boolean"},
		{"string for bool target", `[]`, Limits{}, Type, "", "expected an object, got an array"},
		{"bad base64", `{"requests": [{"request": {"contents": [{"parts": [{"inlineData": {"mimeType": "x", "data": "!!"}}]}]}}]}`, Limits{}, Type, "", "illegal base64"},
		{"depth", `{"requests": [{"request": {"any": [[[[1]]]]}}]}`, Limits{MaxDepth: 6}, Limit, "requests[0].request.any[0][0]", "nesting deeper than the limit of 6"},
		{"string limit", `{"model": "abcdef"}`, Limits{MaxStringBytes: 5}, Limit, "model", "longer than the limit of 5"},
		{"key limit", `{"modelmodel": "a"}`, Limits{MaxStringBytes: 5}, Limit, "", "longer than the limit of 5"},
		{"number limit", `{"requests": [{"request": {"any": 123456789}}]}`, Limits{MaxStringBytes: 8}, Limit, "requests[0].request.any", "number of 9 bytes"},
		{"number out of range", `{"requests": [{"request": {"any": -1e999}}]}`, Limits{}, Type, "requests[0].request.any", "out of range"},
		{"array limit", `{"requests": [{}, {}, {}]}`, Limits{MaxArrayLen: 2}, Limit, "requests", "more than 2 elements"},
		{"object limit", `{"model": "a", "job_id": "b", "extra": "c"}`, Limits{MaxObjectKeys: 2}, Limit, "", "more than 2 members"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v job
			err := Decode([]byte(tt.in), &v, tt.lim)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Decode(%q) = %v, want an *Error", tt.in, err)
			}
			if e.Kind != tt.kind || e.Path != tt.path || !strings.Contains(e.Msg, tt.msg) {
				t.Errorf("Decode(%q) = {Kind: %s, Path: %q, Msg: %q}, want {Kind: %s, Path: %q, Msg containing %q}", tt.in, e.Kind, e.Path, e.Msg, tt.kind, tt.path, tt.msg)
			}
			if e.Offset < 0 || e.Offset > int64(len(tt.in)) {
				t.Errorf("Offset = %d, outside the input of %d bytes", e.Offset, len(tt.in))
			}
		})
	}
}

func TestDecodeAccepts(t *testing.T) {
	in := `{
	  "job_id": "j1", "model": "gemini-2.5-flash", "extra": "promoted",
	  "requests": [
	    {"key": "a", "request": {"contents": [{"role": "user", "parts": [{"text": "h\u00e9llo \ud83d\ude00 \"q\" \\ \/ \b\f\n\r\t"}]}],
	     "generationConfig": {"temperature": 0.5, "maxOutputTokens": 100, "candidateCount": 1, "stopSequences": ["x"], "seed": "42"},
	     "labels": {"team": "a", "Team": "b"},
	     "any": {"deep": [1, -2.5e-3, true, false, null, {"k": "v"}]}}},
	    {"key": "b", "request": {"contents": [{"parts": [{"text": "日本語 ✓", "raw": {"x": [1, {"y": null}]}},
	      {"inlineData": {"mimeType": "image/png", "data": "aGVsbG8="}}]}]}}
	  ]
	}`
	var got job
	if err := Decode([]byte(in), &got, Limits{MaxDepth: 12}); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	var want job
	if err := json.Unmarshal([]byte(in), &want); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(job{})); diff != "" {
		t.Errorf("Decode differs from encoding/json (-want +got):\n%s", diff)
	}
	if got.Extra != "promoted" || got.Requests[0].Request.Config.Seed != 42 || string(got.Requests[1].Request.Contents[0].Parts[1].InlineData.Data) != "hello" {
		t.Errorf("Decode lost values: %+v", got)
	}
}

func TestDecodeTarget(t *testing.T) {
	if err := Decode([]byte(`{}`), job{}, Limits{}); err == nil || errors.As(err, new(*Error)) {
		t.Errorf("Decode into a non-pointer = %v, want a plain error", err)
	}
	var p *job
	if err := Decode([]byte(`{}`), p, Limits{}); err == nil {
		t.Error("Decode into a nil pointer succeeded")
	}
	var n *int
	if err := Decode([]byte(`null`), &n, Limits{}); err != nil || n != nil {
		t.Errorf("Decode(null) = %v, %v", err, n)
	}
}

func TestDecodeLines(t *testing.T) {
	good := "{\"key\": \"a\", \"request\": {\"contents\": []}}\r\n\n   \n{\"key\": \"b\", \"request\": {}}\n"
	var keys []string
	var lines []int
	err := DecodeLines([]byte(good), Limits{}, func(n int, v *line) error {
		keys = append(keys, v.Key)
		lines = append(lines, n)
		return nil
	})
	if err != nil {
		t.Fatalf("DecodeLines: %v", err)
	}
	if diff := cmp.Diff([]string{"a", "b"}, keys); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int{1, 4}, lines); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}

	tests := []struct {
		name string
		in   string
		lim  Limits
		kind Kind
		line int
		path string
	}{
		{"empty", "", Limits{}, Syntax, 0, ""},
		{"blank", "\n \r\n", Limits{}, Syntax, 0, ""},
		{"bad line 3", "{\"key\": \"a\"}\n{\"key\": \"b\"}\n{\"key\": \"c\", \"request\": {\"contents\": [{\"parts\": {}}]}}\n", Limits{}, Type, 3, "request.contents[0].parts"},
		{"two values on a line", "{\"key\": \"a\"}{\"key\": \"b\"}\n", Limits{}, Trailing, 1, ""},
		{"duplicate", "{\"key\": \"a\"}\n{\"key\": \"a\", \"key\": \"b\"}", Limits{}, DuplicateKey, 2, "key"},
		{"case variant", "{\"key\": \"a\"}\n{\"key\": \"a\", \"KEY\": \"b\"}", Limits{}, UnknownField, 2, "KEY"},
		{"unknown", "\n{\"key\": \"a\", \"requests\": {}}", Limits{}, UnknownField, 2, "requests"},
		{"pretty printed", "{\n\"key\": \"a\"}\n", Limits{}, Syntax, 1, ""},
		{"line too long", "{\"key\": \"a\"}\n{\"key\": \"abcdefgh\"}\n", Limits{MaxLineBytes: 14}, Limit, 2, ""},
		{"too many lines", "{}\n{}\n\n{}\n", Limits{MaxLines: 2}, Limit, 4, ""},
		{"invalid utf8", "{\"key\": \"a\xff\"}", Limits{}, InvalidUTF8, 1, "key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := DecodeLines([]byte(tt.in), tt.lim, func(int, *line) error { return nil })
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("DecodeLines = %v, want an *Error", err)
			}
			if e.Kind != tt.kind || e.Line != tt.line || e.Path != tt.path {
				t.Errorf("DecodeLines = {Kind: %s, Line: %d, Path: %q} (%v), want {%s, %d, %q}", e.Kind, e.Line, e.Path, e, tt.kind, tt.line, tt.path)
			}
		})
	}

	stop := errors.New("stop")
	calls := 0
	err = DecodeLines([]byte("{}\n{}\n"), Limits{}, func(int, *line) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Errorf("DecodeLines with a failing callback = %v after %d calls, want stop after 1", err, calls)
	}
}

func TestErrorString(t *testing.T) {
	e := &Error{Kind: UnknownField, Line: 3, Path: "request.contents[0]", Msg: `unknown field "x"`}
	if got, want := e.Error(), `line 3: request.contents[0]: unknown field "x"`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	e = &Error{Kind: Syntax, Msg: "empty input"}
	if got, want := e.Error(), "empty input"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestFormatPath(t *testing.T) {
	got := formatPath([]segment{{key: "requests", isKey: true}, {index: 3}, {key: "a b", isKey: true}, {key: "x-y", isKey: true}, {key: "", isKey: true}, {index: 0}})
	if want := `requests[3]["a b"].x-y[""][0]`; got != want {
		t.Errorf("formatPath = %q, want %q", got, want)
	}
}

// TestValidateAgainstEncodingJSON mutates valid documents at random and checks
// that the scan never accepts what encoding/json rejects, and rejects what it
// accepts only for the reasons this package adds (duplicates, UTF-8, limits).
func TestValidateAgainstEncodingJSON(t *testing.T) {
	seeds := []string{
		`{"a": [1, 2.5, -3e+2, true, false, null], "b": {"c": "d\u00e9\n"}}`,
		`[{"key": "x", "request": {"contents": [{"parts": [{"text": "hi"}]}]}}]`,
		`"\ud83d\ude00"`, `0`, `-0.0e0`, `{}`, `[]`, `"é"`,
	}
	alphabet := []byte(`{}[]:,"\/ 0123456789.eE+-abcnrtfuluxA` + "\x00\x1f\x7f\x80\xc3\xa9\xed\xa0\xff\n")
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		doc := []byte(seeds[i%len(seeds)])
		for range 1 + rng.IntN(3) {
			switch pos := rng.IntN(len(doc) + 1); rng.IntN(3) {
			case 0: // insert
				doc = append(doc[:pos:pos], append([]byte{alphabet[rng.IntN(len(alphabet))]}, doc[pos:]...)...)
			case 1: // delete
				if pos < len(doc) {
					doc = append(doc[:pos:pos], doc[pos+1:]...)
				}
			case 2: // replace
				if pos < len(doc) {
					doc[pos] = alphabet[rng.IntN(len(alphabet))]
				}
			}
		}
		checkAgainstEncodingJSON(t, doc)
	}
}

func checkAgainstEncodingJSON(t *testing.T, doc []byte) {
	t.Helper()
	err := Validate(doc, Limits{})
	valid := json.Valid(doc)
	if err == nil && !valid {
		t.Fatalf("Validate(%q) accepted what encoding/json rejects", doc)
	}
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("Validate(%q) = %v, not an *Error", doc, err)
		}
		if valid && (e.Kind == Syntax || e.Kind == Trailing) {
			t.Fatalf("Validate(%q) = %v (%s), but encoding/json accepts it", doc, err, e.Kind)
		}
		if e.Offset < 0 || e.Offset > int64(len(doc)) {
			t.Fatalf("Validate(%q) offset %d outside the input", doc, e.Offset)
		}
	}
	if err == nil {
		// What passes must decode to the same value with encoding/json.
		var v any
		if uerr := json.Unmarshal(doc, &v); uerr != nil {
			t.Fatalf("Validate(%q) accepted, encoding/json: %v", doc, uerr)
		}
		if bytes.Contains(doc, []byte{0xff}) {
			t.Fatalf("Validate(%q) accepted invalid UTF-8", doc)
		}
	}
}

func FuzzValidate(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `[1,"x",{"b":null}]`, `{"a":1,"A":2}`, "\"\xff\"", `"\ud800"`, `{"a":[[[[]]]]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		checkAgainstEncodingJSON(t, doc)
	})
}

func ExampleDecode() {
	var v struct {
		Model string `json:"model"`
	}
	err := Decode([]byte(`{"model": "a", "Model": "b"}`), &v, Limits{})
	fmt.Println(err)
	// Output: Model: unknown field "Model" (field names are case-sensitive: did you mean "model"?)
}

// Keys inside a value decoded into json.RawMessage or any are data (a JSON
// schema's properties, function arguments): keys differing only in case are
// distinct there, unlike struct fields, which encoding/json merges.
func TestCaseVariantsInsideOpaqueValuesAreDistinct(t *testing.T) {
	for _, body := range []string{
		`{"requests": [{"request": {"contents": [{"parts": [{"raw": {"a": 1, "A": 2}}]}]}}]}`,
		`{"requests": [{"request": {"any": {"x": {"Yy": 1, "yY": 2}}}}]}`,
	} {
		var v job
		if err := Decode([]byte(body), &v, Limits{}); err != nil {
			t.Errorf("Decode(%s) = %v, want nil", body, err)
		}
	}
}

// Without a target type, keys that encoding/json would match to one field
// are duplicates.
func TestValidateFoldsKeysOfUnknownObjects(t *testing.T) {
	var e *Error
	if err := Validate([]byte(`{"a": {"Ab": 1, "aB": 2}}`), Limits{}); !errors.As(err, &e) || e.Kind != DuplicateKey || e.Path != "a.aB" || !strings.Contains(e.Msg, "only in case") {
		t.Errorf("Validate = %v, want a case-variant duplicate at a.aB", err)
	}
}

func TestDecoderProtoJSON(t *testing.T) {
	proto := Decoder{ProtoJSON: true}
	in := `{"contents": [{"parts": [{"inline_data": {"mime_type": "image/png", "data": "aGVsbG8"}}, {"inlineData": {"mimeType": "a/b", "data": "-_8"}}]}],
	        "generation_config": {"max_output_tokens": 1e2, "candidateCount": 3.0, "stop_sequences": ["x"]}, "labels": {"snake_key": "kept"}}`
	var got request
	if err := proto.Decode([]byte(in), &got); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	ten := int32(100)
	want := request{
		Contents: []content{{Parts: []part{{InlineData: &blob{MimeType: "image/png", Data: []byte("hello")}}, {InlineData: &blob{MimeType: "a/b", Data: []byte{0xfb, 0xff}}}}}},
		Config:   &genConfig{MaxOutputTokens: &ten, CandidateCount: 3, Stop: []string{"x"}},
		Labels:   map[string]string{"snake_key": "kept"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Decode (-want +got):\n%s", diff)
	}
	for _, tc := range []struct {
		name, in string
		kind     Kind
		path     string
		msg      string
	}{
		{"alias and name", `{"generationConfig": {"maxOutputTokens": 1, "max_output_tokens": 2}}`, DuplicateKey, "generationConfig.max_output_tokens", `the same field as "maxOutputTokens"`},
		{"not the alias", `{"generationConfig": {"maxOutput_tokens": 1}}`, UnknownField, "generationConfig.maxOutput_tokens", "unknown field"},
		{"case variant", `{"Contents": []}`, UnknownField, "Contents", `did you mean "contents"?`},
		{"fraction for int", `{"generationConfig": {"maxOutputTokens": 1.5}}`, Type, "generationConfig.maxOutputTokens", "does not fit an integer"},
		{"whole but out of range", `{"generationConfig": {"candidateCount": 256.0}}`, Type, "generationConfig.candidateCount", "does not fit"},
		{"bad base64", `{"contents": [{"parts": [{"inlineData": {"mimeType": "a/b", "data": "@@"}}]}]}`, Type, "contents[0].parts[0].inlineData.data", "invalid base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v request
			err := proto.Decode([]byte(tc.in), &v)
			var e *Error
			if !errors.As(err, &e) || e.Kind != tc.kind || e.Path != tc.path || !strings.Contains(e.Msg, tc.msg) {
				t.Errorf("Decode = %#v, want %s at %q containing %q", err, tc.kind, tc.path, tc.msg)
			}
		})
	}
	// Without ProtoJSON the spellings are refused.
	var v request
	if err := Decode([]byte(`{"generation_config": {}}`), &v, Limits{}); err == nil {
		t.Error("Decode without ProtoJSON accepted a snake_case field name")
	}
}
