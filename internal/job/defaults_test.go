package job

import (
	"encoding/json"
	"testing"
)

func TestApplyDefaults(t *testing.T) {
	sys := json.RawMessage(`{"parts":[{"text":"S"}]}`)
	gen := json.RawMessage(`{"temperature":0.1,"topK":3}`)
	tests := []struct{ in, want string }{
		{`{"contents":[]}`, `{"contents":[],"generationConfig":{"temperature":0.1,"topK":3},"systemInstruction":{"parts":[{"text":"S"}]}}`},
		{`{"contents":[],"system_instruction":{"parts":[]},"generationConfig":null}`, `{"contents":[],"generationConfig":{"temperature":0.1,"topK":3},"system_instruction":{"parts":[]}}`},
		{`{"contents":[],"generationConfig":{"top_k":9}}`, `{"contents":[],"generationConfig":{"temperature":0.1,"top_k":9},"systemInstruction":{"parts":[{"text":"S"}]}}`},
	}
	for _, tt := range tests {
		got, err := applyDefaults(json.RawMessage(tt.in), sys, gen)
		if err != nil || string(got) != tt.want {
			t.Errorf("applyDefaults(%s) = %s, %v; want %s", tt.in, got, err, tt.want)
		}
	}
	if got, _ := applyDefaults(json.RawMessage(`{"contents":[]}`), nil, json.RawMessage("null")); string(got) != `{"contents":[]}` {
		t.Errorf("applyDefaults without defaults changed the request: %s", got)
	}
}
