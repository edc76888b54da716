// Command gen writes gemq's example job, examples/prompts.jsonl: 300 requests
// in the Gemini Batch API's JSONL input format
//
//	{"key": "...", "request": {"contents": [{"role": "user", "parts": [{"text": "..."}]}]}}
//
// with varied prompt lengths (mostly short questions, some medium summaries
// and a tail of long documents, about 20 to 2,000 input tokens), a few with a
// system instruction or generation settings. The output is deterministic: run
//
//	go run ./examples/gen > examples/prompts.jsonl
//
// and the file does not change (a test checks it).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
)

// Count is the number of requests in the example job.
const Count = 300

var topics = []string{
	"tidal energy", "the history of the printing press", "sourdough fermentation", "black holes",
	"urban beekeeping", "the Roman road network", "lithium-ion batteries", "coral reef bleaching",
	"the invention of the telescope", "supply chains for coffee", "volcanic soils", "the Silk Road",
	"container shipping", "honeybee navigation", "the water cycle", "early computer memory",
	"glaciers", "the Fibonacci sequence", "jazz improvisation", "desert ecosystems",
	"the human microbiome", "wind turbines", "medieval cathedrals", "origami mathematics",
	"monsoons", "the Apollo guidance computer", "mushroom networks", "paper making",
	"solar sails", "the Great Barrier Reef",
}

var questions = []string{
	"Explain %s to a ten-year-old in three sentences.",
	"Give me three surprising facts about %s.",
	"What is the single most important idea behind %s?",
	"Write a haiku about %s.",
	"List two common misconceptions about %s and correct them.",
	"Suggest a title for a short documentary on %s.",
}

var sentences = []string{
	"Researchers have studied %s for decades, and the picture keeps changing as new measurements arrive.",
	"Most introductions to %s skip the practical constraints that matter in the field.",
	"A small number of careful experiments shaped how we now think about %s.",
	"The economics of %s are often more decisive than the engineering.",
	"Historical accounts of %s disagree on dates but agree on the broad sequence of events.",
	"Local conditions make %s behave very differently from one place to another.",
	"Popular articles about %s tend to exaggerate both the risks and the benefits.",
	"Practitioners of %s rely on rules of thumb that were only later explained by theory.",
}

type part struct {
	Text string `json:"text"`
}

type content struct {
	Role  string `json:"role,omitempty"`
	Parts []part `json:"parts"`
}

type generationConfig struct {
	MaxOutputTokens int     `json:"maxOutputTokens,omitempty"`
	Temperature     float64 `json:"temperature,omitempty"`
}

type request struct {
	Contents          []content         `json:"contents"`
	SystemInstruction *content          `json:"systemInstruction,omitempty"`
	GenerationConfig  *generationConfig `json:"generationConfig,omitempty"`
}

type line struct {
	Key     string  `json:"key"`
	Request request `json:"request"`
}

// paragraph returns n sentences about topic.
func paragraph(r *rand.Rand, topic string, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, sentences[r.IntN(len(sentences))], topic)
	}
	return b.String()
}

// Write writes the example job to w.
func Write(w io.Writer) error {
	r := rand.New(rand.NewPCG(2026, 5))
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	for i := range Count {
		topic := topics[r.IntN(len(topics))]
		var l line
		var text string
		switch x := r.IntN(10); {
		case x < 6: // a short question: ~15-40 tokens
			l.Key = fmt.Sprintf("question-%03d", i)
			text = fmt.Sprintf(questions[r.IntN(len(questions))], topic)
		case x < 9: // a medium summary: ~150-500 tokens
			l.Key = fmt.Sprintf("summary-%03d", i)
			text = "Summarise the following notes in two sentences.\n\n" + paragraph(r, topic, 6+r.IntN(20))
		default: // a long document: ~800-2,000 tokens
			l.Key = fmt.Sprintf("document-%03d", i)
			var paras []string
			for range 4 + r.IntN(6) {
				paras = append(paras, paragraph(r, topic, 8+r.IntN(6)))
			}
			text = "Read this report and list its three main claims as bullet points.\n\n" + strings.Join(paras, "\n\n")
		}
		l.Request.Contents = []content{{Role: "user", Parts: []part{{Text: text}}}}
		if r.IntN(5) == 0 {
			l.Request.SystemInstruction = &content{Parts: []part{{Text: "You are a concise science writer."}}}
		}
		if r.IntN(4) == 0 {
			l.Request.GenerationConfig = &generationConfig{MaxOutputTokens: 64 + 64*r.IntN(8), Temperature: 0.2}
		}
		if err := enc.Encode(l); err != nil {
			return fmt.Errorf("json encode: %w", err)
		}
	}
	return bw.Flush()
}

func main() {
	if err := Write(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
