package geminisim_test

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"strings"
	"testing"
	"time"

	"google.golang.org/genai"

	"github.com/gemq-dev/gemq/infra/geminisim"
	"github.com/gemq-dev/gemq/internal/gemini"
)

func TestIndependentTokenizerByKind(t *testing.T) {
	for _, tc := range []struct {
		kind, text string
		want       int64
		// lo, hi bound independent/estimate: how far gemq's characters/4 rule is off for this kind.
		lo, hi float64
	}{
		{"prose", "The quick brown fox jumps over the lazy dog.", 10, 0.8, 1.2},
		{"digits", "12,345,678.90,17,2026", 21, 3, 5},
		{"cjk", "東京都の天気は晴れです", 11, 1, 1},
		{"long words", "internationalization counterrevolutionaries", 10, 0.8, 1.0},
		{"json", `{"id":12,"tags":["a","b"],"ok":true}`, 28, 2, 3.5},
		{"code", "for (int i = 0; i < n; i++) { sum += a[i]; }", 25, 2, 3},
		{"spaces", "a\n\n  b", 5, 2, 5},
	} {
		got := geminisim.TextTokensIndependent(tc.text)
		if got != tc.want {
			t.Errorf("%s %q: %d tokens, want %d", tc.kind, tc.text, got, tc.want)
		}
		est := gemini.TextTokens(tc.text)
		if r := float64(got) / float64(est); r < tc.lo || r > tc.hi {
			t.Errorf("%s: independent/estimate = %d/%d = %.2f, want in [%g, %g]", tc.kind, got, est, r, tc.lo, tc.hi)
		}
	}
}

func pngOf(t *testing.T, w, h int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, image.NewGray(image.Rect(0, 0, w, h))); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestMediaAtDocumentedRates(t *testing.T) {
	wav := make([]byte, 44+3*8000) // 3 s of 8 kHz 8-bit mono
	copy(wav, "RIFF")
	wav[28], wav[29] = 8000&0xff, 8000>>8
	pdf := []byte("%PDF-1.4 /Type /Pages /Type /Page x /Type /Page y")
	for _, tc := range []struct {
		name string
		blob genai.Blob
		want int64
	}{
		{"small image", genai.Blob{MIMEType: "image/png", Data: pngOf(t, 384, 200)}, 258},
		{"large image: 2×2 tiles", genai.Blob{MIMEType: "image/png", Data: pngOf(t, 1000, 800)}, 4 * 258},
		{"undecodable image", genai.Blob{MIMEType: "image/jpeg", Data: []byte{1, 2}}, 258},
		{"wav audio: 32/s", genai.Blob{MIMEType: "audio/wav", Data: wav}, 3 * 32},
		{"video: 263/s at 2 Mbit/s", genai.Blob{MIMEType: "video/mp4", Data: make([]byte, 500_000)}, 2 * 263},
		{"pdf: 258 per page", genai.Blob{MIMEType: "application/pdf", Data: pdf}, 2 * 258},
	} {
		b := tc.blob
		got := geminisim.CountTokensIndependent(nil, []*genai.Content{{Parts: []*genai.Part{{InlineData: &b}}}})
		if got != tc.want {
			t.Errorf("%s: %d tokens, want %d", tc.name, got, tc.want)
		}
	}
}

// TestTokenizerModes: usageMetadata and countTokens report the independent count by default in quota
// checks, and gemq's estimate only in the mode named for it.
func TestTokenizerModes(t *testing.T) {
	text := strings.Repeat("3.14159,2.71828\n", 10)
	for _, tc := range []struct {
		tok  geminisim.Tokenizer
		want int64
	}{
		{geminisim.IndependentTokens, geminisim.TextTokensIndependent(text)},
		{geminisim.EstimatorTokens, gemini.TextTokens(text)},
	} {
		_, gc := start(t, geminisim.Options{Tokenizer: tc.tok})
		resp, err := generate(gc, "t", text)
		if err != nil {
			t.Fatal(err)
		}
		ct, err := gc.Models.CountTokens(context.Background(), model, genai.Text(text), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := int64(resp.UsageMetadata.PromptTokenCount); got != tc.want || int64(ct.TotalTokens) != tc.want {
			t.Errorf("%s: promptTokenCount %d, countTokens %d, want %d", tc.tok, got, ct.TotalTokens, tc.want)
		}
	}
	if geminisim.TextTokensIndependent(text) < 3*gemini.TextTokens(text) {
		t.Errorf("digit rows: independent %d not ≥ 3× the estimate %d", geminisim.TextTokensIndependent(text), gemini.TextTokens(text))
	}
}

// TestDSQ drives the hidden capacity through the real client: full, then 40%, then full again, with
// detail-less 429s above it (classified Capacity) that are not charged.
func TestDSQ(t *testing.T) {
	dsq, err := geminisim.ParseDSQ("10/10s;1m=0.4;2m=1")
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	now := base
	srv, gc := start(t, geminisim.Options{DSQ: dsq, Now: func() time.Time { return now }, Start: base})
	burst := func() (ok, capacity int) {
		for range 12 {
			_, err := generate(gc, "d", "hi")
			switch f := gemini.Classify(err); {
			case err == nil:
				ok++
			case f.Kind == gemini.Capacity && f.QuotaID == "" && f.RetryAfter == 0:
				capacity++
			default:
				t.Fatalf("unexpected error %v", err)
			}
		}
		return ok, capacity
	}
	for _, step := range []struct {
		at   time.Duration
		want int
	}{{0, 10}, {70 * time.Second, 4}, {130 * time.Second, 10}} {
		now = base.Add(step.at)
		if ok, c := burst(); ok != step.want || c != 12-step.want {
			t.Errorf("at %v: %d ok, %d capacity 429s, want %d ok", step.at, ok, c, step.want)
		}
	}
	if ms := srv.Stats(1).Models[model]; ms.Charged != 24 {
		t.Errorf("charged %d, want 24 (429s are not charged)", ms.Charged)
	}
	for _, bad := range []string{"10", "x/1s", "10/1s;1m", "10/1s;1m=2", "10/1s;2m=1;1m=0.5"} {
		if _, err := geminisim.ParseDSQ(bad); err == nil {
			t.Errorf("ParseDSQ(%q) accepted", bad)
		}
	}
}

// TestTierMismatch: the stand-in's real limit is below what a client believes; its 429s carry the real
// limit as QuotaFailure.quotaValue, which gemini.Classify exposes.
func TestTierMismatch(t *testing.T) {
	_, gc := start(t, geminisim.Options{Tokenizer: geminisim.IndependentTokens, Limits: geminisim.Limits{RPM: 3}})
	var f gemini.Failure
	for i := range 4 {
		_, err := generate(gc, "m", "hi")
		if i < 3 && err != nil {
			t.Fatal(err)
		}
		f = gemini.Classify(err)
	}
	if f.Kind != gemini.QuotaPerMinute || f.QuotaValue != 3 {
		t.Errorf("4th call over a real RPM of 3: %+v", f)
	}
}
