package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"testing"

	"github.com/gemq-dev/gemq/internal/gemini"
)

// TestFileIsUpToDate checks that examples/prompts.jsonl is what the generator
// writes, and that every line is a valid Batch API request.
func TestFileIsUpToDate(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile("../prompts.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), file) {
		t.Fatal("examples/prompts.jsonl is stale: run go run ./examples/gen > examples/prompts.jsonl")
	}
	sc := bufio.NewScanner(bytes.NewReader(file))
	sc.Buffer(nil, 1<<20)
	keys := map[string]bool{}
	var total, maxTok, minTok int64
	minTok = 1 << 62
	for sc.Scan() {
		var l struct {
			Key     string          `json:"key"`
			Request json.RawMessage `json:"request"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		if keys[l.Key] {
			t.Errorf("duplicate key %s", l.Key)
		}
		keys[l.Key] = true
		req, err := gemini.ParseRequest(l.Request)
		if err != nil {
			t.Fatalf("%s: %v", l.Key, err)
		}
		if err := req.Validate(); err != nil {
			t.Fatalf("%s: %v", l.Key, err)
		}
		n := gemini.EstimateInputTokens(req)
		total += n
		maxTok, minTok = max(maxTok, n), min(minTok, n)
	}
	if len(keys) != Count {
		t.Errorf("%d requests, want %d", len(keys), Count)
	}
	t.Logf("%d requests, %d input tokens (min %d, max %d, mean %d)", len(keys), total, minTok, maxTok, total/int64(len(keys)))
	if minTok > 30 || maxTok < 800 {
		t.Errorf("lengths not varied enough: min %d, max %d", minTok, maxTok)
	}
}
