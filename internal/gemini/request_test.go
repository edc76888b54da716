package gemini

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/genai"
)

func TestParseRequestAccepts(t *testing.T) {
	raw := `{
	  "contents": [{"role": "user", "parts": [{"text": "Hi"}, {"inline_data": {"mime_type": "image/png", "data": "aGVsbG8"}}]}],
	  "system_instruction": {"parts": [{"text": "Be brief."}]},
	  "generationConfig": {"temperature": 0.5, "max_output_tokens": 100, "topK": 40, "responseMimeType": "application/json",
	    "responseJsonSchema": {"type": "object", "properties": {"a": {"type": "string"}}},
	    "thinkingConfig": {"thinkingBudget": 0}},
	  "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
	  "tools": [{"functionDeclarations": [{"name": "f", "description": "d"}]}],
	  "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
	  "cachedContent": null
	}`
	r, err := ParseRequest([]byte(raw))
	if err != nil {
		t.Fatalf("ParseRequest: %v", err)
	}
	if err := r.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if got := string(r.Contents[0].Parts[1].InlineData.Data); got != "hello" {
		t.Errorf("inline data = %q, want hello (unpadded base64 accepted)", got)
	}
	if *r.GenerationConfig.MaxOutputTokens != 100 || r.SystemInstruction.Parts[0].Text != "Be brief." {
		t.Errorf("snake_case aliases not mapped: %+v", r.GenerationConfig)
	}
	cfg := r.genaiConfig()
	if cfg.MaxOutputTokens != 100 || *cfg.Temperature != 0.5 || cfg.ResponseJsonSchema == nil || cfg.SystemInstruction == r.SystemInstruction {
		t.Errorf("genaiConfig = %+v", cfg)
	}
}

func TestParseRequestRejects(t *testing.T) {
	for _, tc := range []struct {
		name, raw, field, msg string
	}{
		{"unknown top-level", `{"contents":[],"model":"x"}`, "request.model", "unknown field"},
		{"unknown nested", `{"contents":[{"parts":[{"text":"a"},{"txt":"b"}]}]}`, "request.contents[0].parts[1].txt", "unknown field"},
		{"unknown in config", `{"generationConfig":{"temprature":1}}`, "request.generationConfig.temprature", "unknown field"},
		{"case variant", `{"Contents":[]}`, "request.Contents", "unknown field"},
		{"duplicate", `{"contents":[],"contents":[]}`, "request.contents", `duplicate key "contents"`},
		{"alias duplicate", `{"generationConfig":{"maxOutputTokens":1,"max_output_tokens":2}}`, "request.generationConfig.max_output_tokens", `the same field as "maxOutputTokens"`},
		{"duplicate in free JSON", `{"tools":[{"functionDeclarations":[{"name":"f","parametersJsonSchema":{"a":1,"a":2}}]}]}`, "request.tools[0].functionDeclarations[0].parametersJsonSchema.a", "duplicate key"},
		{"wrong type", `{"generationConfig":{"temperature":"hot"}}`, "request.generationConfig.temperature", "expected a number, got a string"},
		{"fraction for int", `{"generationConfig":{"maxOutputTokens":1.5}}`, "request.generationConfig.maxOutputTokens", "does not fit an integer"},
		{"bad base64", `{"contents":[{"parts":[{"inlineData":{"mimeType":"image/png","data":"@@"}}]}]}`, "request.contents[0].parts[0].inlineData.data", "invalid base64"},
		{"not an array", `{"contents":{}}`, "request.contents", "expected an array, got an object"},
		{"trailing data", `{"contents":[]} {}`, "request", "unexpected data"},
		{"not an object", `[1]`, "request", "must be a JSON object"},
		{"syntax", `{"contents":[}`, "request.contents[0]", "expected a value"},
		{"truncated", `{"contents":[`, "request.contents[0]", "unexpected end"},
		{"invalid UTF-8", "{\"contents\":[{\"parts\":[{\"text\":\"\xff\"}]}]}", "request.contents[0].parts[0].text", "invalid UTF-8"},
		{"lone surrogate", `{"contents":[{"parts":[{"text":"\ud800"}]}]}`, "request.contents[0].parts[0].text", "lone UTF-16 surrogate"},
		{"case variant deep", `{"contents":[{"parts":[{"text":"x","TEXT":"y"}]}]}`, "request.contents[0].parts[0].TEXT", `unknown field "TEXT"`},
		{"exact duplicate in a schema", `{"generationConfig":{"responseJsonSchema":{"properties":{"url":{},"url":{}}}}}`, "request.generationConfig.responseJsonSchema.properties.url", `duplicate key "url"`},
		{"too deep", `{"tools":[{"functionDeclarations":[{"name":"f","parametersJsonSchema":` + strings.Repeat(`{"a":`, 64) + `1` + strings.Repeat(`}`, 64) + `}]}]}`, "request.tools[0].functionDeclarations[0].parametersJsonSchema" + strings.Repeat(".a", 59), "nesting deeper"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRequest([]byte(tc.raw))
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want *FieldError", err)
			}
			if fe.Field != tc.field || !strings.Contains(fe.Message, tc.msg) {
				t.Errorf("got %q / %q, want field %q with %q", fe.Field, fe.Message, tc.field, tc.msg)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	const ok = `"contents":[{"parts":[{"text":"hello"}]}]`
	for _, tc := range []struct {
		name, raw, field string
	}{
		{"valid", `{` + ok + `}`, ""},
		{"no contents", `{}`, "request.contents"},
		{"empty prompt", `{"contents":[{"parts":[{"text":"  "}]}]}`, "request.contents"},
		{"no parts", `{"contents":[{"role":"user"}]}`, "request.contents[0].parts"},
		{"empty part", `{"contents":[{"parts":[{}]}]}`, "request.contents[0].parts[0]"},
		{"two kinds", `{"contents":[{"parts":[{"text":"a","fileData":{"fileUri":"gs://x"}}]}]}`, "request.contents[0].parts[0]"},
		{"bad role", `{"contents":[{"role":"system","parts":[{"text":"a"}]}]}`, "request.contents[0].role"},
		{"inline without mime", `{"contents":[{"parts":[{"inlineData":{"data":"aGk="}}]}]}`, "request.contents[0].parts[0].inlineData.mimeType"},
		{"temperature high", `{` + ok + `,"generationConfig":{"temperature":2.5}}`, "request.generationConfig.temperature"},
		{"temperature negative", `{` + ok + `,"generationConfig":{"temperature":-0.1}}`, "request.generationConfig.temperature"},
		{"temperature 2 ok", `{` + ok + `,"generationConfig":{"temperature":2}}`, ""},
		{"topP", `{` + ok + `,"generationConfig":{"topP":1.01}}`, "request.generationConfig.topP"},
		{"topK zero", `{` + ok + `,"generationConfig":{"topK":0}}`, "request.generationConfig.topK"},
		{"topK fraction", `{` + ok + `,"generationConfig":{"topK":2.5}}`, "request.generationConfig.topK"},
		{"candidateCount", `{` + ok + `,"generationConfig":{"candidateCount":9}}`, "request.generationConfig.candidateCount"},
		{"maxOutputTokens", `{` + ok + `,"generationConfig":{"maxOutputTokens":0}}`, "request.generationConfig.maxOutputTokens"},
		{"presencePenalty", `{` + ok + `,"generationConfig":{"presencePenalty":2}}`, "request.generationConfig.presencePenalty"},
		{"logprobs alone", `{` + ok + `,"generationConfig":{"logprobs":3}}`, "request.generationConfig.logprobs"},
		{"stop sequences", `{` + ok + `,"generationConfig":{"stopSequences":["a","b","c","d","e","f"]}}`, "request.generationConfig.stopSequences"},
		{"mime", `{` + ok + `,"generationConfig":{"responseMimeType":"text/html"}}`, "request.generationConfig.responseMimeType"},
		{"schema without json", `{` + ok + `,"generationConfig":{"responseSchema":{"type":"STRING"}}}`, "request.generationConfig.responseSchema"},
		{"thinking budget", `{` + ok + `,"generationConfig":{"thinkingConfig":{"thinkingBudget":-2}}}`, "request.generationConfig.thinkingConfig.thinkingBudget"},
		{"safety dup", `{` + ok + `,"safetySettings":[{"category":"HARM_CATEGORY_HARASSMENT","threshold":"BLOCK_NONE"},{"category":"HARM_CATEGORY_HARASSMENT","threshold":"BLOCK_NONE"}]}`, "request.safetySettings[1].category"},
		{"cached content", `{` + ok + `,"cachedContent":"abc"}`, "request.cachedContent"},
		{"tool mode", `{` + ok + `,"toolConfig":{"functionCallingConfig":{"mode":"SOMETIMES"}}}`, "request.toolConfig.functionCallingConfig.mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRequest([]byte(tc.raw))
			if err != nil {
				t.Fatalf("ParseRequest: %v", err)
			}
			err = r.Validate()
			var fe *FieldError
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.field == "":
			case !errors.As(err, &fe):
				t.Fatalf("Validate = %v, want *FieldError for %s", err, tc.field)
			case fe.Field != tc.field:
				t.Errorf("field = %q (%v), want %q", fe.Field, fe, tc.field)
			}
		})
	}
}

func TestTokenRule(t *testing.T) {
	for s, want := range map[string]int64{"": 0, "a": 1, "abcd": 1, "abcde": 2, "日本": 2, "ab日": 2, "hello world!": 3} {
		if got := TextTokens(s); got != want {
			t.Errorf("TextTokens(%q) = %d, want %d", s, got, want)
		}
	}
	r := &Request{
		SystemInstruction: &genai.Content{Parts: []*genai.Part{{Text: "abcdefgh"}}},
		Contents: []*genai.Content{{Parts: []*genai.Part{
			{Text: "abcd"}, {InlineData: &genai.Blob{MIMEType: "image/png", Data: []byte{1}}},
			{FunctionCall: &genai.FunctionCall{Name: "fn", Args: map[string]any{"b": 1, "a": "x"}}},
		}}},
	}
	// system 2 + text 1 + image 258 + "fn" 1 + `{"a":"x","b":1}` (15 chars) 4
	if got, want := EstimateInputTokens(r), int64(2+1+258+1+4); got != want {
		t.Errorf("EstimateInputTokens = %d, want %d", got, want)
	}
	if EstimateInputTokens(nil) != 0 {
		t.Error("EstimateInputTokens(nil) != 0")
	}
}

func TestModelID(t *testing.T) {
	for in, want := range map[string]string{"gemini-2.5-flash": "gemini-2.5-flash", "models/gemini-2.5-flash": "gemini-2.5-flash", "": "", "models/": "", "a/b": "", "x y": ""} {
		got, err := ModelID(in)
		if (err != nil) != (want == "") || got != want {
			t.Errorf("ModelID(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestEstimateKind(t *testing.T) {
	for _, tc := range []struct {
		text, want string
		media      bool
	}{
		{"The quick brown fox jumps over the lazy dog.", KindProse, false},
		{"12,345,678.90,17,2026\n3,4,5", KindDigits, false},
		{"東京都の天気は晴れです", KindCJK, false},
		{`{"id":"x","tags":["a","b"],"ok":true}`, KindCode, false},
		{"describe this", KindMedia, true},
		{"", KindProse, false},
	} {
		part := &genai.Part{Text: tc.text}
		if tc.media {
			part.InlineData = &genai.Blob{MIMEType: "image/png", Data: []byte{1}}
		}
		r := &Request{Contents: []*genai.Content{{Role: "user", Parts: []*genai.Part{part}}}}
		kind, n := EstimateKind(r)
		if kind != tc.want || n != EstimateInputTokens(r) {
			t.Errorf("EstimateKind(%q) = %s, %d; want %s, %d", tc.text, kind, n, tc.want, EstimateInputTokens(r))
		}
	}
	if k, n := EstimateKind(nil); k != KindProse || n != 0 {
		t.Errorf("EstimateKind(nil) = %s, %d", k, n)
	}
}
