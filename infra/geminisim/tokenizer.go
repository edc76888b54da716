package geminisim

import (
	"bytes"
	"encoding/json"
	"image"
	_ "image/gif" // DecodeConfig of inline images
	_ "image/jpeg"
	_ "image/png"
	"strings"
	"unicode"
	"unicode/utf8"

	"google.golang.org/genai"

	"github.com/gemq-dev/gemq/internal/gemini"
)

// Tokenizer selects how the stand-in counts a request's input tokens (what it charges, reports in
// usageMetadata.promptTokenCount and answers countTokens with).
type Tokenizer string

const (
	// IndependentTokens is the stand-in's own rule, CountTokensIndependent: it
	// differs from gemq's characters/4 estimate systematically by kind of content, as Gemini's tokenizer
	// does. Everything that checks quota behaviour uses it.
	IndependentTokens Tokenizer = "independent"
	// EstimatorTokens counts exactly as gemq's local estimator (gemini.ContentsTokens), for tests that
	// need exact estimates; ask for it by name.
	EstimatorTokens Tokenizer = "estimator"
)

// ParseTokenizer parses a Tokenizer name for command lines; "" means IndependentTokens.
func ParseTokenizer(s string) (Tokenizer, bool) {
	switch Tokenizer(s) {
	case "", IndependentTokens:
		return IndependentTokens, true
	case EstimatorTokens:
		return EstimatorTokens, true
	}
	return "", false
}

// count counts a request's input tokens with tokenizer t.
func (t Tokenizer) count(system *genai.Content, contents []*genai.Content) int64 {
	if t == EstimatorTokens {
		return gemini.ContentsTokens(system, contents)
	}
	return CountTokensIndependent(system, contents)
}

// Media rates as Gemini documents them (https://ai.google.dev/gemini-api/docs/tokens, "Multimodal
// tokens"; worked example at https://geminibyexample.com/027-calculate-input-tokens/): an image with both
// sides <= 384 px is 258 tokens, a larger one is cut into 768×768 tiles of 258 tokens each; video is 263
// tokens per second, audio 32 tokens per second; a PDF page counts as an image of 258 tokens
// (https://ai.google.dev/gemini-api/docs/document-processing).
const (
	imageTokens      = 258
	imageSmallSide   = 384
	imageTile        = 768
	videoPerSecond   = 263
	audioPerSecond   = 32
	pdfPageTokens    = 258
	audioBytesPerSec = 16_000  // a 128 kbit/s stream: the duration of audio the stand-in cannot parse
	videoBytesPerSec = 250_000 // a 2 Mbit/s stream, likewise for video
)

// CountTokensIndependent is the stand-in's deterministic tokenizer. It is NOT gemq's estimator: it
// follows how SentencePiece-style tokenizers (Gemma 3's, which Gemini 2.x shares) treat kinds of content:
//
//   - a word of letters (with the space before it) is one token up to 7 letters, then one per 4 more;
//   - every digit is a token (numbers are split into digits), and so is every punctuation or symbol;
//   - a CJK character (Han, Hiragana, Katakana, Hangul) is a token; other non-ASCII letters count as
//     letters of their word; a line break is a token, and runs of other spaces beyond one are a token;
//   - inline media parts count at Gemini's documented rates (see the constants above); a fileData part
//     counts as one small image (its bytes are not available).
//
// So prose comes out close to characters/4, while digit-heavy rows, JSON and code come out 2–4× above it
// and CJK about the same as gemq's one-per-character rule. Function calls and responses count as their
// name plus their JSON; executable code and results as their text. A nil part counts 0.
func CountTokensIndependent(system *genai.Content, contents []*genai.Content) int64 {
	var n int64
	count := func(c *genai.Content) {
		if c == nil {
			return
		}
		for _, p := range c.Parts {
			n += independentPart(p)
		}
	}
	count(system)
	for _, c := range contents {
		count(c)
	}
	return n
}

func independentPart(p *genai.Part) int64 {
	if p == nil {
		return 0
	}
	n := TextTokensIndependent(p.Text)
	if p.InlineData != nil {
		n += mediaTokens(p.InlineData.MIMEType, p.InlineData.Data)
	}
	if p.FileData != nil {
		n += imageTokens
	}
	if fc := p.FunctionCall; fc != nil {
		n += TextTokensIndependent(fc.Name) + jsonTokensIndependent(fc.Args)
	}
	if fr := p.FunctionResponse; fr != nil {
		n += TextTokensIndependent(fr.Name) + jsonTokensIndependent(fr.Response)
	}
	if ec := p.ExecutableCode; ec != nil {
		n += TextTokensIndependent(ec.Code)
	}
	if cr := p.CodeExecutionResult; cr != nil {
		n += TextTokensIndependent(cr.Output)
	}
	return n
}

func jsonTokensIndependent(v map[string]any) int64 {
	if len(v) == 0 {
		return 0
	}
	b, err := json.Marshal(v)
	if err != nil {
		return 0
	}
	return TextTokensIndependent(string(b))
}

// TextTokensIndependent counts a text by the rule of CountTokensIndependent.
func TextTokensIndependent(s string) int64 {
	var n, word int64
	spaces := 0
	flushWord := func() {
		if word > 0 {
			n += 1 + max(0, (word-7+3)/4)
			word = 0
		}
	}
	for _, r := range s {
		switch {
		case r == '\n':
			flushWord()
			n++
			spaces = 0
			continue
		case r == ' ' || r == '\t' || r == '\r':
			flushWord()
			spaces++
			if spaces == 2 { // a run of spaces beyond the one a word carries
				n++
			}
			continue
		}
		spaces = 0
		switch {
		case isCJK(r):
			flushWord()
			n++
		case unicode.IsLetter(r) || unicode.IsMark(r):
			word++
		default: // digits, punctuation, symbols
			flushWord()
			n++
		}
	}
	flushWord()
	return n
}

func isCJK(r rune) bool {
	return unicode.Is(unicode.Han, r) || unicode.Is(unicode.Hiragana, r) || unicode.Is(unicode.Katakana, r) ||
		unicode.Is(unicode.Hangul, r)
}

// mediaTokens counts one inline media part at Gemini's documented rates.
func mediaTokens(mime string, data []byte) int64 {
	mime = strings.ToLower(mime)
	switch {
	case strings.HasPrefix(mime, "image/"):
		cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
		if err != nil {
			return imageTokens
		}
		return imageTokensFor(cfg.Width, cfg.Height)
	case mime == "application/pdf":
		pages := int64(bytes.Count(data, []byte("/Type /Page"))) - int64(bytes.Count(data, []byte("/Type /Pages")))
		return max(1, pages) * pdfPageTokens
	case strings.HasPrefix(mime, "audio/"):
		return max(1, seconds(mime, data, audioBytesPerSec)) * audioPerSecond
	case strings.HasPrefix(mime, "video/"):
		return max(1, seconds(mime, data, videoBytesPerSec)) * videoPerSecond
	}
	// Other inline data (text/plain, text/csv...) is read as text.
	if utf8.Valid(data) {
		return TextTokensIndependent(string(data))
	}
	return imageTokens
}

// imageTokensFor is Gemini's documented image rate for a w×h image.
func imageTokensFor(w, h int) int64 {
	if w <= imageSmallSide && h <= imageSmallSide {
		return imageTokens
	}
	tiles := int64((w+imageTile-1)/imageTile) * int64((h+imageTile-1)/imageTile)
	return tiles * imageTokens
}

// seconds is the duration of a WAV (from its header) or, for other formats, of a stream of the given
// byte rate, rounded up.
func seconds(mime string, data []byte, bytesPerSec int64) int64 {
	if (mime == "audio/wav" || mime == "audio/x-wav") && len(data) >= 44 && string(data[0:4]) == "RIFF" {
		rate := int64(data[28]) | int64(data[29])<<8 | int64(data[30])<<16 | int64(data[31])<<24
		if rate > 0 {
			return (int64(len(data)-44) + rate - 1) / rate
		}
	}
	return (int64(len(data)) + bytesPerSec - 1) / bytesPerSec
}
