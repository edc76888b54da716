package bench

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"

	"google.golang.org/genai"

	"github.com/gemq-dev/gemq/infra/geminisim"
	"github.com/gemq-dev/gemq/internal/gemini"
)

// Content kinds of a benchmark job (PipelineOptions.Content): what its
// prompts are made of, hence how far gemq's local estimate (characters/4)
// is from the stand-in's independent tokenizer.
const (
	// ContentWords is prose of short common words (the utilisation and seed
	// benchmarks): the stand-in counts about 0.6 of gemq's estimate.
	ContentWords = ""
	// ContentDigits is data-extraction rows of numbers with a few words:
	// the stand-in counts about twice gemq's estimate.
	ContentDigits = "digits"
	// ContentLong is prose of seven-letter words: the stand-in counts about
	// half gemq's estimate.
	ContentLong = "long"
	// ContentMixed rotates prose, digits, CJK, JSON and a short text with
	// an inline PNG (EstimatorPrompt's kinds), task by task.
	ContentMixed = "mixed"
)

var sevenLetter = strings.Fields(`balance capital freight journal payment receipt invoice account deliver
	channel premium segment storage finance company product quarter revenue partner contact`)

// contentRequest builds the i-th request of a job of content kind whose
// true size (the stand-in's independent count) is about want tokens.
func contentRequest(kind string, i int, want int64, rng *rand.Rand) *gemini.Request {
	if kind == ContentMixed {
		k := EstimatorKinds[i%len(EstimatorKinds)]
		return EstimatorPrompt(k, i, rng.Uint64())
	}
	var text strings.Builder
	fmt.Fprintf(&text, "Task %d:", i)
	req := func() *gemini.Request {
		return &gemini.Request{Contents: []*genai.Content{{Role: "user", Parts: []*genai.Part{{Text: text.String()}}}}}
	}
	count := func() int64 {
		r := req()
		return geminisim.CountTokensIndependent(r.SystemInstruction, r.Contents)
	}
	for count() < want {
		switch kind {
		case ContentDigits:
			// "order 48213: 17 units, depot 903, 12.75"
			fmt.Fprintf(&text, "\norder %d: %d units, depot %d, %d.%02d", rng.IntN(100000), rng.IntN(100),
				rng.IntN(1000), rng.IntN(100), rng.IntN(100))
		case ContentLong:
			text.WriteString(" ")
			text.WriteString(sevenLetter[rng.IntN(len(sevenLetter))])
		default:
			text.WriteString(" ")
			text.WriteString(words[rng.IntN(len(words))])
		}
	}
	return req()
}

// jobLine is one Batch-API JSONL line for req.
func jobLine(i int, req *gemini.Request) ([]byte, error) {
	parts := make([]any, 0, 2)
	for _, p := range req.Contents[0].Parts { // one kind of data per part, as the API requires
		if p.Text != "" {
			parts = append(parts, map[string]any{"text": p.Text})
		}
		if p.InlineData != nil {
			parts = append(parts, map[string]any{"inlineData": map[string]any{"mimeType": p.InlineData.MIMEType, "data": p.InlineData.Data}})
		}
	}
	return json.Marshal(map[string]any{"key": fmt.Sprintf("k%06d", i), "request": map[string]any{
		"contents":         []any{map[string]any{"role": "user", "parts": parts}},
		"generationConfig": map[string]any{"maxOutputTokens": 16},
	}})
}
